"""Local speech engines: a laptop's default speech-to-text and text-to-speech.

    POST /v1/audio/transcriptions  -> PocketSphinx (its wheel ships an English model)
    POST /v1/audio/speech          -> eSpeak NG (Debian's `espeak-ng`, a subprocess)

served by `firsttoken speech serve` behind OpenAI's audio endpoints, so a policy uses
them as plain `kind: stt` / `kind: tts` targets. No GPU, no key, no model download: for
trials, tests and demos. In production the same routes point at vLLM (Whisper),
speaches, Kokoro-FastAPI or hosted OpenAI and Groq audio.

    check.py          what is missing to run them, each with the command that installs it
    pcm.py            uploaded audio (WAV, raw PCM) read as mono 16-bit samples
    sphinx.py         PocketSphinx in a bounded pool of worker processes
    sphinx_worker.py  the decoder inside one worker
    espeak.py         eSpeak NG, one killable subprocess per request, streamed
    server.py         the aiohttp app of both endpoints

Only `check` is safe to import without the `voice-local` extra.
"""
