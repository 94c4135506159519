"""Audio tasks of the remote backend: one ``InferenceClient`` call each.

==============================  ===================================================================
automatic-speech-recognition    ``automatic_speech_recognition`` on 16-bit WAV, whitespace collapsed
audio-classification            ``audio_classification``, the backend's ``top_k`` labels
text-to-speech                  ``text_to_speech``, decoded to mono at most ``max_audio_seconds`` long
audio-to-audio                  ``audio_to_audio``, the first audio returned, every label kept in ``extra``
==============================  ===================================================================
"""

from __future__ import annotations

from typing import Any

from tasks.experts.arguments import audio_input, text_input
from tasks.experts.base import ExpertError, ExpertInputs, ExpertOutput, ModelSpec
from tasks.experts.outputs import format_audio_classification
from tasks.experts.remote.registry import RemoteOptions, remote_task
from tasks.experts.remote.wire import decode_audio, flat, wav


@remote_task("automatic-speech-recognition")
def automatic_speech_recognition(
    options: RemoteOptions, client: Any, inputs: ExpertInputs, model: ModelSpec
) -> ExpertOutput:
    audio = audio_input(inputs, "audio")
    result = client.automatic_speech_recognition(wav(audio))
    return ExpertOutput(text=" ".join(str(result.text or "").split()), extra={"seconds": audio.seconds})


@remote_task("audio-classification")
def audio_classification(options: RemoteOptions, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
    result = client.audio_classification(wav(audio_input(inputs, "audio")), top_k=options.top_k)
    return format_audio_classification(flat(result))


@remote_task("text-to-speech")
def text_to_speech(options: RemoteOptions, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
    data = client.text_to_speech(text_input(inputs, "text"))
    return ExpertOutput(audio=decode_audio(data, options.max_audio_seconds))


@remote_task("audio-to-audio")
def audio_to_audio(options: RemoteOptions, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
    results = client.audio_to_audio(wav(audio_input(inputs, "audio")))
    if not results:
        raise ExpertError("the server returned no audio")
    output = ExpertOutput(audio=decode_audio(results[0].blob, options.max_audio_seconds))
    output.extra["labels"] = [str(r.label) for r in results]
    return output
