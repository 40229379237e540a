// A streamed tool call with the official TypeScript SDK (@anthropic-ai/sdk, pinned in package.json).
// Usage: node stream_tool_call.mjs <base-url> <api-key> <model>
// Prints one JSON line: what finalMessage() returned, and the stream events the SDK emitted.
import Anthropic from "@anthropic-ai/sdk";

const [baseURL, apiKey, model] = process.argv.slice(2);
const client = new Anthropic({ baseURL, apiKey, maxRetries: 0, timeout: 30_000 });

const stream = client.messages.stream({
  model,
  max_tokens: 512,
  tools: [
    {
      name: "get_weather",
      description: "Current weather for a city",
      input_schema: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
    },
  ],
  tool_choice: { type: "auto" },
  messages: [{ role: "user", content: "What is the weather in Paris?" }],
});

const events = [];
const inputJson = [];
stream.on("streamEvent", (event) => events.push(event.type));
stream.on("inputJson", (_delta, snapshot) => inputJson.push(snapshot));
const message = await stream.finalMessage();
process.stdout.write(JSON.stringify({ message, events, inputJson }) + "\n");
