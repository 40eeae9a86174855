"""What managers and operators read: Prometheus metrics, speed-to-lead reports and the status page.

Reads the rooms below; nothing below imports it.
"""
