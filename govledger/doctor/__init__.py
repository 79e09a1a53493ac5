"""`govledger doctor`: pure checks (`checks`, `contradictions`), the I/O probes behind a
protocol (`probes`), and the run that joins them under timeouts (`run`)."""
