"""Policy packs and the policy chain the gateway runs on every call."""
