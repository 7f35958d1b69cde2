"""Keys: provider keys (the upstream credentials) and client keys (what apps call with).

`provider_keys` validates and stores provider keys (secrets encrypted by `secrets`),
`lifecycle` is the one state machine that changes a key's status, `states`
says why a key is in its state and until when, `selection` which keys may serve a request and in
which order, `catalog` which models each serves, `keytest` the one cheap call that tries a key,
`cache` each profile's keys per process. `client_keys` are the keys clients present.
"""
