"""Reports: pure functions from a results file to HTML / Markdown, and run-to-run comparison.

`render.render_html(run)` and `render.render_markdown(run)` regenerate the source article's tables (latency,
resources, QPS by concurrency, the multi-dimension summary) from measured data only, every ranked figure with its
95 % CI and ties called where intervals overlap (`ranking`); `compare.compare_runs` says whether one run is
significantly slower than another, for engine cells and load-test levels. Readers use the typed records of
`bench.core.records` and import only the bench core.
"""
