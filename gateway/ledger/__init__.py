"""The ledger: what each request cost and who paid for it.

The request's rows go to the journal first (durable with one write), then to the database off
the request's path (`books`); `accounting` makes those rows, `pricing` the cost in integer
micro-dollars. `credits` and `paystack` raise what a key may spend; `alerts` says when spend
nears a budget; `reports` reads it all back for the dashboard.
"""
