"""Quota thresholds per wallet: alerts as a month's spend passes shares of its budget."""
