"""KeyRelay's domain: providers, key selection, failover and accounting. No Flask in here."""
