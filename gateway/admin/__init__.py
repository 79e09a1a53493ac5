"""The admin API: issue and revoke keys, fund, allocate, refund and correct wallets, set
their overdraft limits, read balances, publish policy packs, decide escalations. Each
change is a control event (the admin log), produced with acks=all before the call returns.

Who may do what: the bootstrap admin token and keys with role org-admin act on every
tenant; keys with role tenant-admin act on their own tenant only, and never issue a role
above their own. Funding wallets, allocating from the org wallet to teams, refunds,
corrections and overdraft limits are for org admins: a tenant admin could otherwise lift
the budget it is held to. A tenant admin may allocate its teams' money to their keys.
Another tenant's keys, packs, wallets and escalations are answered with 404, as if they
did not exist.

One module per resource: `principals` (who is calling: the rule the query API shares),
`requests` (reading a request's body and fields), `keys`, `wallets`, `policies` (with the
org baseline), `escalations`; `context` (what every handler publishes with and reads);
`api` assembles the routes (`AdminApi`). This file imports none of them, so the sink
process can import `gateway.admin.principals` alone."""
