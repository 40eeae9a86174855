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


def hang_up() -> str:
    """End the call without a word (a voicemail that answered a reminder, a leg nobody should hear)."""
    response = VoiceResponse()
    response.hangup()
    return str(response.to_xml())


def ring_staff(staff: list[tuple[str, str]], caller_id: str, ring_seconds: int, dial_status_url: str) -> str:
    """Ring each (number, whisper URL) at once, the caller hearing ringing meanwhile (answerOnBridge). Whoever
    answers first hears the whisper TwiML before being connected, and is connected only if it does not hang up;
    Twilio posts how the <Dial> ended to `dial_status_url`. https://www.twilio.com/docs/voice/twiml/number#url"""
    response = VoiceResponse()
    dial = response.dial(answer_on_bridge=True, caller_id=caller_id, timeout=ring_seconds, action=dial_status_url,
                         method="POST")
    for number, whisper_url in staff:
        dial.number(number, url=whisper_url, method="POST")
    return str(response.to_xml())


def whisper(prompt: str, gather_url: str) -> str:
    """What a staff member hears on picking up before the caller is put through: the prompt twice inside a one-key
    <Gather>; no key (a voicemail took the call, or they did not want it) hangs up this leg only."""
    response = VoiceResponse()
    gather = response.gather(num_digits=1, action=gather_url, method="POST", timeout=GATHER_SECONDS)
    gather.say(prompt)
    gather.pause(length=1)
    gather.say(prompt)
    response.hangup()
    return str(response.to_xml())


def put_through(say: str) -> str:
    """Say `say` to the staff member; the whisper document then ends and Twilio connects them to the caller."""
    response = VoiceResponse()
    response.say(say)
    return str(response.to_xml())


def voicemail(prompt: str, recorded_url: str, recording_status_url: str, max_seconds: int,
              transcription_url: str | None, nothing_left: str) -> str:
    """Say `prompt`, then record after a beep (# or silence ends it). Twilio posts the recording to `recorded_url`
    when it ends (also when the caller hangs up), its processed state to `recording_status_url`, and with
    `transcription_url` its transcription there. Silence records nothing: Twilio goes on to `nothing_left`.
    https://www.twilio.com/docs/voice/twiml/record"""
    response = VoiceResponse()
    response.say(prompt)
    transcribe = {"transcribe": True, "transcribe_callback": transcription_url} if transcription_url else {}
    response.record(action=recorded_url, method="POST", max_length=max_seconds, play_beep=True, finish_on_key="#",
                    timeout=5, recording_status_callback=recording_status_url,
                    recording_status_callback_method="POST", recording_status_callback_event="completed",
                    **transcribe)
    response.say(nothing_left)
    response.hangup()
    return str(response.to_xml())
