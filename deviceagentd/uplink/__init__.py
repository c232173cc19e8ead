"""Store-and-forward to a central MQTT broker (docs/uplink.md). Imported only when uplink.url is set."""
