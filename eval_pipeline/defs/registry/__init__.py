"""Registry: registered model versions and the sensor that evaluates each new one."""
