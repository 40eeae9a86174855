"""The HTTP door: Gravity Forms webhooks (`app`), Twilio's webhooks (`twilio_hooks`; an inbound call's steps in
`phone_line_hooks`), health and metrics; stored entries handed to the broker off the request path (`handoff`).

A request is verified, stored, handed on and answered; the work itself happens in the rooms.
"""
