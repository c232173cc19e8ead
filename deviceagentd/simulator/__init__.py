"""A simulated device for installers, tests and benchmarks: `python -m deviceagentd.simulator`
or `scripts/simulate-device`, or `SimulatedDevice` from code.

Modules: `model` (state and command rules, no network), `clock` (NTP math), `link` (the MQTT
connection over gmqtt), `device` (SimulatedDevice), `__main__` (the command line).
"""

from deviceagentd.simulator.clock import NtpSample
from deviceagentd.simulator.device import SimulatedDevice, SimulatorOptions
from deviceagentd.simulator.model import DeviceModel, ReceivedCommand

__all__ = ["DeviceModel", "NtpSample", "ReceivedCommand", "SimulatedDevice", "SimulatorOptions"]
