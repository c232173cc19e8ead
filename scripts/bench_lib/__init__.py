"""deviceagentd benchmark (`scripts/bench`): every number next to a baseline measured in the
same run, because the machines we run on are shared and noisy.

Modules: `main` (command line, order of the measurements), `scenarios` (the measurements),
`procs` (broker, daemon and helper processes), `mqttc` (a thin gmqtt client for the
benchmark's own traffic), `publisher` / `subscriber` (helper processes), `prom` (reading
/metrics), `stats`, `report` (the table and the JSON file).
"""
