"""Escalation queues: routing, reviewers' actions and review SLAs."""
