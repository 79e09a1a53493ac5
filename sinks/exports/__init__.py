"""Exports: a tenant's (or the org's) events, escalations or wallet history over a window,
written to a file in CSV, JSON Lines or Parquet with a manifest (rows, time range, SHA-256
of the file, the hash-chain heads it covers), as background jobs of the sink.

Memory stays bounded however large the export: the store is read in pages of at most
`PAGE_ROWS` rows (keyset pagination on the table's sort key, one `store.run` call per
page so the sink's inserts interleave on the store thread), each page is written to disk
and dropped before the next is asked for, and the SHA-256 is computed as bytes go out.
What is kept across pages is O(producers): the chain head of each producer seen.

A job is a directory `<root>/<export_id>/` holding `job.json` (its state), the file and
`manifest.json`; jobs are reloaded when the sink starts, so finished exports survive a
restart (a job that was running is marked failed, one still queued runs again).

The package, by concern (each module imports only those above it):
- `formats`: the formats, their file extensions and content types (no pyarrow);
- `queries`: what each export type reads, and the SQL of a count and of a page;
- `writers`: the CSV, JSON Lines and Parquet page writers and the hashing sink;
- `job`: one job's record; `manifest`: the manifest, tallied page by page;
- `jobs`: the job queue and its workers (`ExportJobs`);
- `schedules`: schedules, pure (cadences, next and missed runs, records); `scheduler`:
  their runner, which submits each run to the jobs (`ExportSchedules`).
The routes are `sinks/exports_api.py` and `sinks/export_schedules_api.py`."""
