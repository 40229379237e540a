"""The local stack: embedded DynamoDB, the demo worker, `make dev`."""
