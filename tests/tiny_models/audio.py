"""Tiny audio models: speech recognition, speech synthesis and its vocoder, audio classification."""

from __future__ import annotations

import json
import pathlib

from tests.tiny_models.common import (
    _CHARACTERS,
    CORPUS,
    _byte_level_bpe,
    _labels,
    _sentencepiece_model,
    _unprintable_token_ids,
)

AUDIO_LABELS: dict[int, str] = {0: "speech", 1: "music", 2: "silence"}


def _build_asr(folder: pathlib.Path) -> None:
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    vocab = {tok: i for i, tok in enumerate(["<pad>", "<s>", "</s>", "<unk>", "|", *_CHARACTERS])}
    vocab_file = folder / "vocab.json"
    vocab_file.write_text(json.dumps(vocab), encoding="utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(str(vocab_file), word_delimiter_token="|")
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16_000, padding_value=0.0, do_normalize=True, return_attention_mask=False
    )
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    config = Wav2Vec2Config(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8, 8),
        conv_stride=(5, 4, 4),
        conv_kernel=(10, 8, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        pad_token_id=tokenizer.pad_token_id,
        ctc_loss_reduction="mean",
    )
    Wav2Vec2ForCTC(config).save_pretrained(folder)


def _build_tts(folder: pathlib.Path) -> None:
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    vocab = {tok: i for i, tok in enumerate(["<pad>", " ", *_CHARACTERS, "<unk>"])}
    vocab_file = folder / "vocab.json"
    vocab_file.write_text(json.dumps(vocab), encoding="utf-8")
    tokenizer = VitsTokenizer(str(vocab_file), language="eng", add_blank=True, normalize=True, phonemize=False)
    tokenizer.save_pretrained(folder)
    config = VitsConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        ffn_dim=32,
        flow_size=16,
        spectrogram_bins=33,
        upsample_initial_channel=16,
        upsample_rates=(8, 8, 2, 2),
        upsample_kernel_sizes=(16, 16, 4, 4),
        resblock_kernel_sizes=(3,),
        resblock_dilation_sizes=((1,),),
        depth_separable_num_layers=1,
        duration_predictor_filter_channels=16,
        duration_predictor_num_flows=1,
        prior_encoder_num_flows=1,
        prior_encoder_num_wavenet_layers=1,
        posterior_encoder_num_wavenet_layers=1,
        sampling_rate=16_000,
        pad_token_id=vocab["<pad>"],
    )
    VitsModel(config).save_pretrained(folder)


def _build_audio_classification(folder: pathlib.Path) -> None:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16_000, padding_value=0.0, do_normalize=True, return_attention_mask=False
    ).save_pretrained(folder)
    config = Wav2Vec2Config(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8, 8),
        conv_stride=(5, 4, 4),
        conv_kernel=(10, 8, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        classifier_proj_size=8,
        **_labels(AUDIO_LABELS),
    )
    Wav2Vec2ForSequenceClassification(config).save_pretrained(folder)


#: Whisper's special tokens for English transcription.
WHISPER_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nospeech|>",
    "<|notimestamps|>",
)


def _build_whisper(folder: pathlib.Path) -> None:
    """openai/whisper-base, openai/whisper-tiny: WhisperConfig, WhisperProcessor (WhisperFeatureExtractor,
    WhisperTokenizer with Whisper's special tokens), a multilingual generation config."""
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    vocab, merges = _byte_level_bpe(CORPUS, list(WHISPER_TOKENS))
    tokenizer = WhisperTokenizer(vocab=vocab, merges=merges)
    tokenizer.model_max_length = 64
    extractor = WhisperFeatureExtractor(feature_size=16)
    WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    ids = {t: vocab[t] for t in WHISPER_TOKENS}
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=16,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_source_positions=1500,
        max_target_positions=64,
        pad_token_id=ids["<|endoftext|>"],
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|endoftext|>"],
        decoder_start_token_id=ids["<|startoftranscript|>"],
        suppress_tokens=[],
        begin_suppress_tokens=[],
    )
    model = WhisperForConditionalGeneration(config)
    generation = model.generation_config
    generation.decoder_start_token_id = ids["<|startoftranscript|>"]
    generation.eos_token_id = ids["<|endoftext|>"]
    generation.pad_token_id = ids["<|endoftext|>"]
    generation.no_timestamps_token_id = ids["<|notimestamps|>"]
    generation.is_multilingual = True
    generation.lang_to_id = {"<|en|>": ids["<|en|>"]}
    generation.task_to_id = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
    generation.suppress_tokens = [i for i in _unprintable_token_ids(tokenizer) if i not in ids.values()]
    generation.begin_suppress_tokens = []
    model.save_pretrained(folder)


def _build_ast(folder: pathlib.Path) -> None:
    """MIT/ast-finetuned-audioset-10-10-0.4593: ASTConfig, ASTFeatureExtractor."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    ASTFeatureExtractor(num_mel_bins=16, max_length=64).save_pretrained(folder)
    config = ASTConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_mel_bins=16,
        max_length=64,
        **_labels(AUDIO_LABELS),
    )
    ASTForAudioClassification(config).save_pretrained(folder)


def _build_speecht5(folder: pathlib.Path) -> None:
    """microsoft/speecht5_tts: SpeechT5Config, SpeechT5Processor (SpeechT5Tokenizer on a character sentencepiece
    model, SpeechT5FeatureExtractor); its vocoder is built by :func:`_build_speecht5_hifigan`."""
    from transformers import (
        SpeechT5Config,
        SpeechT5FeatureExtractor,
        SpeechT5ForTextToSpeech,
        SpeechT5Processor,
        SpeechT5Tokenizer,
    )

    spm_file = folder / "spm_char.model"
    spm_file.write_bytes(_sentencepiece_model(CORPUS, "char", 60, bos_id=0, pad_id=1, eos_id=2, unk_id=3))
    tokenizer = SpeechT5Tokenizer(str(spm_file))
    tokenizer.model_max_length = 64
    SpeechT5Processor(feature_extractor=SpeechT5FeatureExtractor(num_mel_bins=8), tokenizer=tokenizer).save_pretrained(
        folder
    )
    config = SpeechT5Config(
        vocab_size=len(tokenizer),
        hidden_size=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_mel_bins=8,
        speech_decoder_prenet_units=16,
        speech_decoder_postnet_units=16,
        speech_decoder_postnet_layers=1,
        speaker_embedding_dim=512,
        max_text_positions=64,
        max_speech_positions=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.bos_token_id,
    )
    SpeechT5ForTextToSpeech(config).save_pretrained(folder)


def _build_speecht5_hifigan(folder: pathlib.Path) -> None:
    """microsoft/speecht5_hifigan: SpeechT5HifiGanConfig."""
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    config = SpeechT5HifiGanConfig(
        model_in_dim=8,
        upsample_initial_channel=16,
        upsample_rates=[4, 4],
        upsample_kernel_sizes=[8, 8],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1]],
        sampling_rate=16_000,
    )
    SpeechT5HifiGan(config).save_pretrained(folder)
