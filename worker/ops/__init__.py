"""What managers and operators read: Prometheus metrics, speed-to-lead reports (overall and by channel: form, call,
text, with the center's number's calls) and the status page.

Reads the rooms below; nothing below imports it.
"""
