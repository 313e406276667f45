"""A local stand-in for AWS IoT Core's device-facing MQTT behaviour.

The broker itself is mosquitto (`emulator.broker` configures it as close to
AWS as its settings allow); the emulator is an MQTT client on the cloud side
of that broker that answers shadow, provisioning and jobs requests the way
AWS IoT Core does. It is for tests and offline development, not production.
"""
