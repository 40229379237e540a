// A message batch with the official TypeScript SDK (@anthropic-ai/sdk, pinned in package.json):
// create, poll until it ends, read its results, list, delete.
// Usage: node batch_results.mjs <base-url> <api-key> <model>
// Prints one JSON line: the batch as created and as ended, the result entries the SDK's JSONL
// decoder yielded, the first page of the list, the deletion's answer, and what retrieving the
// deleted batch raised.
import Anthropic from "@anthropic-ai/sdk";

const [baseURL, apiKey, model] = process.argv.slice(2);
const client = new Anthropic({ baseURL, apiKey, maxRetries: 0, timeout: 30_000 });

const MAX_POLLS = 400;
const POLL_MS = 150;

const params = (id) => ({ model, max_tokens: 64, messages: [{ role: "user", content: `request ${id}` }] });
const requests = ["a", "b", "c", "d", "e"].map((id) => ({ custom_id: id, params: params(id) }));
delete requests[2].params.max_tokens; // "c": refused by validation, an errored result

const created = await client.messages.batches.create({ requests });

let ended = created;
let polls = 0;
while (ended.processing_status !== "ended") {
  if (++polls > MAX_POLLS) {
    throw new Error(`batch ${created.id} did not end after ${MAX_POLLS} polls: ${JSON.stringify(ended)}`);
  }
  await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  ended = await client.messages.batches.retrieve(created.id);
}

const results = [];
for await (const entry of await client.messages.batches.results(created.id)) {
  results.push(entry);
}

const page = await client.messages.batches.list({ limit: 10 });
const list = {
  ids: page.data.map((batch) => batch.id),
  has_more: page.has_more,
  first_id: page.first_id,
  last_id: page.last_id,
};

const deleted = await client.messages.batches.delete(created.id);

// Once deleted, the batch is not found: the SDK raises its NotFoundError.
let afterDelete;
try {
  afterDelete = { found: await client.messages.batches.retrieve(created.id) };
} catch (error) {
  if (!(error instanceof Anthropic.APIError)) throw error;
  afterDelete = { error: error.constructor.name, status: error.status, body: error.error };
}

process.stdout.write(JSON.stringify({ created, ended, polls, results, list, deleted, afterDelete }) + "\n");
