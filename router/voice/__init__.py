"""The cascade's pieces: audio codecs and resampling, VAD, clauses, truncation, the clock.

A cascade session (issue 21) answers the Realtime protocol itself: VAD segments the
caller's audio (`input_buffer`, `vad`), each utterance becomes an STT turn, the
conversation an LLM turn, and clauses of the streamed text (`clauses`) TTS turns;
`truncate` cuts the assistant's text to what was heard, and `clock` follows one
user turn through its stages. Nothing here does I/O.
"""
