"""The proxy path, split into stages handed downward: admission (client key, limits,
budget → a ticket), candidates (usable keys, best first), chain (routes, fallbacks,
wait-for-key), attempts (one key after another), relay (answers and streams to the
client) and booking (the only caller of accounting). `gateway.service.Gateway` composes
them."""
