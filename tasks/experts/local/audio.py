"""Audio tasks of the local backend.

==============================  ===================================================================
automatic-speech-recognition    ``pipeline("automatic-speech-recognition")`` (wav2vec2 CTC models, Whisper), input
                                resampled to the model's rate, long audio in 30 s chunks
audio-classification            ``pipeline("audio-classification")`` (wav2vec2, HuBERT, AST, ...), at most
                                ``max_audio_seconds`` of the input
text-to-speech                  ``pipeline("text-to-speech")``: VITS / MMS-TTS and other waveform models as they are;
                                SpeechT5 with its HiFi-GAN vocoder and a speaker embedding (below)
==============================  ===================================================================

SpeechT5 (``microsoft/speecht5_tts``) predicts a spectrogram for one speaker: transformers refuses to generate
without ``speaker_embeddings`` (a 512-float x-vector) and needs a vocoder to make a waveform. The backend loads the
vocoder named by its ``speecht5_vocoder`` setting (``microsoft/speecht5_hifigan`` by default, a Hub id or a folder)
and speaks with the x-vector in the file named by its ``speaker_embeddings`` setting (a ``.npy`` file of 512
floats, e.g. one row of the CMU ARCTIC x-vectors); without one it uses :data:`DEFAULT_SPEAKER_EMBEDDING`, the
all-zero x-vector (a neutral voice of the model's own).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.experts.arguments import audio_input, text_input
from tasks.experts.base import ExpertError, ExpertInputs, ExpertOutput, ModelSpec
from tasks.experts.local.loading import hub_kwargs, load_pipeline, pipeline_loader, resample
from tasks.experts.local.registry import LocalOptions, local_task
from tasks.experts.outputs import format_audio_classification, waveform_audio

#: The x-vector SpeechT5 speaks with when no ``speaker_embeddings`` file is set: 512 zeros.
DEFAULT_SPEAKER_EMBEDDING: tuple[float, ...] = (0.0,) * 512


@dataclass
class SpeechT5:
    """A SpeechT5 text-to-speech pipeline (vocoder attached) and the speaker it speaks as."""

    pipe: Any
    speaker_embeddings: Any


def load_text_to_speech(options: LocalOptions, model: ModelSpec) -> Any:
    from transformers import AutoConfig

    kwargs = hub_kwargs(options, model)
    if AutoConfig.from_pretrained(model.source, **kwargs).model_type != "speecht5":
        return load_pipeline(options, "text-to-speech", model)
    import torch
    from transformers import SpeechT5HifiGan, pipeline

    vocoder_kwargs = {k: v for k, v in kwargs.items() if k == "token"}
    vocoder = SpeechT5HifiGan.from_pretrained(options.speecht5_vocoder, **vocoder_kwargs).to(options.device).eval()
    pipe = pipeline("text-to-speech", model=model.source, vocoder=vocoder, device=options.device, **kwargs)
    return SpeechT5(pipe=pipe, speaker_embeddings=torch.tensor([speaker_embedding(options.speaker_embeddings)]))


def speaker_embedding(path: str | None) -> list[float]:
    """The 512-float x-vector in the ``.npy`` file at ``path``, or :data:`DEFAULT_SPEAKER_EMBEDDING`."""
    if path is None:
        return list(DEFAULT_SPEAKER_EMBEDDING)
    vector = np.load(path).astype(np.float32).reshape(-1)
    if vector.shape != (512,):
        raise ValueError(f"the speaker embedding in {path} has {vector.size} values, SpeechT5 takes 512")
    return [float(x) for x in vector]


@local_task("automatic-speech-recognition", pipeline_loader("automatic-speech-recognition"))
def run_speech_recognition(options: LocalOptions, pipe: Any, inputs: ExpertInputs) -> ExpertOutput:
    audio = audio_input(inputs, "audio")
    target_rate = int(pipe.feature_extractor.sampling_rate)
    samples = resample(audio.array, audio.sampling_rate, target_rate)
    kwargs: dict[str, Any] = {}
    if len(samples) > 30 * target_rate:
        kwargs["chunk_length_s"] = 30
    if getattr(pipe, "type", None) == "seq2seq_whisper":
        kwargs["generate_kwargs"] = {"max_new_tokens": options.max_new_tokens}
    result = pipe({"raw": samples, "sampling_rate": target_rate}, **kwargs)
    text = str(result.get("text", "") if isinstance(result, dict) else result)
    if getattr(pipe, "type", None) == "ctc":
        text = _strip_special_tokens(text, pipe.tokenizer)
    return ExpertOutput(text=" ".join(text.split()), extra={"seconds": len(samples) / target_rate})


@local_task("audio-classification", pipeline_loader("audio-classification"))
def run_audio_classification(options: LocalOptions, pipe: Any, inputs: ExpertInputs) -> ExpertOutput:
    audio = audio_input(inputs, "audio")
    target_rate = int(pipe.feature_extractor.sampling_rate)
    samples = resample(audio.array, audio.sampling_rate, target_rate)
    max_samples = int(options.max_audio_seconds * target_rate)
    clipped = len(samples) > max_samples
    result = pipe({"raw": samples[:max_samples], "sampling_rate": target_rate}, top_k=options.top_k)
    output = format_audio_classification(result)
    output.extra["seconds"] = min(len(samples), max_samples) / target_rate
    if clipped:
        output.extra["clipped_to_seconds"] = options.max_audio_seconds
    return output


@local_task("text-to-speech", load_text_to_speech)
def run_text_to_speech(options: LocalOptions, loaded: Any, inputs: ExpertInputs) -> ExpertOutput:
    text = text_input(inputs, "text")
    pipe = loaded.pipe if isinstance(loaded, SpeechT5) else loaded
    tokenizer = getattr(pipe, "tokenizer", None)
    if tokenizer is not None and not tokenizer(text).get("input_ids"):
        raise ExpertError(f"the text has no characters this voice can read: {text[:80]!r}")
    if isinstance(loaded, SpeechT5):
        result = pipe(text, forward_params={"speaker_embeddings": loaded.speaker_embeddings.to(pipe.device)})
    else:
        result = pipe(text)
    rate = int(result["sampling_rate"])
    audio = waveform_audio(result["audio"], rate, options.max_audio_seconds)
    output = ExpertOutput(audio=audio)
    if waveform_audio(result["audio"], rate).array.size > audio.array.size:
        output.extra["clipped_to_seconds"] = options.max_audio_seconds
    return output


def _strip_special_tokens(text: str, tokenizer: Any) -> str:
    """Drop special tokens that a CTC decode keeps (the ASR pipeline decodes CTC output without skipping them)."""
    for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
        token = getattr(tokenizer, name, None)
        if isinstance(token, str) and token:
            text = text.replace(token, "")
    return text
