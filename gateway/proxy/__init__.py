"""The proxy path, split into stages: admission (client key, limits, budget → a ticket),
candidates (usable keys, best first), chain (routes, fallbacks, wait-for-key, context
overflow), attempts (each outcome's verdict), infer (one upstream call), relay (answers
and streams to the client) and booking (the only caller of accounting). Each takes data
and returns data or a decision; `gateway.service.Gateway.serve` composes them in one
loop, and no stage imports or calls back into it (tests/test_stages.py checks)."""
