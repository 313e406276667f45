"""pytest fixture `emulator`: the AWS IoT Core emulator on the test broker."""
