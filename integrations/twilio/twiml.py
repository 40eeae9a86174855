"""TwiML documents admitflow answers Twilio's webhooks with, built with the `twilio` package's own builders.

Messaging TwiML: https://www.twilio.com/docs/messaging/twiml
Voice TwiML (<Gather>, <Say>, <Dial>): https://www.twilio.com/docs/voice/twiml
"""

from __future__ import annotations

from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import VoiceResponse

# Seconds <Gather> waits for the key press after the prompt, and <Dial> rings the person before giving up.
GATHER_SECONDS = 8
DIAL_RING_SECONDS = 30


def message_reply(text: str | None) -> str:
    """An SMS answer: <Response><Message>text</Message></Response>, or an empty <Response/> to send nothing."""
    response = MessagingResponse()
    if text:
        response.message(text)
    return str(response.to_xml())


def spoken(*sentences: str) -> str:
    """Say each sentence, then hang up."""
    response = VoiceResponse()
    for sentence in sentences:
        response.say(sentence)
    response.hangup()
    return str(response.to_xml())


NO_KEY_UNCLAIMED = "No key was pressed. The request is still unclaimed. Goodbye."
NO_KEY_CALLBACK = "No key was pressed. The callback is still yours; you will be called again to try it. Goodbye."


def claim_prompt(prompt: str, gather_url: str, no_key: str = NO_KEY_UNCLAIMED) -> str:
    """Say the reminder twice inside one <Gather numDigits=1>, so a key press at any point claims (or, on a
    call-back reminder, connects); without a key press say `no_key` and hang up."""
    response = VoiceResponse()
    gather = response.gather(num_digits=1, action=gather_url, method="POST", timeout=GATHER_SECONDS)
    gather.say(prompt)
    gather.pause(length=1)
    gather.say(prompt)
    response.say(no_key)
    response.hangup()
    return str(response.to_xml())


def bridge(intro: str, number: str, caller_id: str, dial_status_url: str) -> str:
    """Say `intro`, then connect this call to `number`, showing `caller_id` (the center's number) to the person.
    Twilio posts the <Dial> outcome (DialCallStatus, DialCallDuration) to `dial_status_url`."""
    response = VoiceResponse()
    response.say(intro)
    dial = response.dial(caller_id=caller_id, action=dial_status_url, method="POST", timeout=DIAL_RING_SECONDS)
    dial.number(number)
    return str(response.to_xml())


def redirect(say: str, url: str) -> str:
    response = VoiceResponse()
    response.say(say)
    response.redirect(url, method="POST")
    return str(response.to_xml())
