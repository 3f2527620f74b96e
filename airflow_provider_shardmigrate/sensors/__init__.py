"""Sensors: the schema drift sensor."""
