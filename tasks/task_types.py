"""The task table: every task type, the arguments it takes and the outputs it produces.

One table, read by the planner prompt (names and descriptions), the plan validator
(argument names, modalities, what ``<GENERATED>-k`` may refer to) and the executor
(which inputs to load, which outputs to store).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class Modality(StrEnum):
    """The kinds of value that flow between nodes."""

    TEXT = "text"
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"
    TABLE = "table"
    JSON = "json"


#: Modalities stored as files in the artifact store (text stays inline).
FILE_MODALITIES = frozenset({Modality.IMAGE, Modality.AUDIO, Modality.VIDEO, Modality.TABLE, Modality.JSON})


class ArgSpec(BaseModel):
    """One argument of a task: its name in the plan's ``args`` and its modality."""

    model_config = ConfigDict(frozen=True)

    name: str
    modality: Modality
    required: bool = True
    description: str = ""


class TaskType(BaseModel):
    """A task type: what it does, what it takes and what it produces.

    ``outputs`` lists the modalities the task produces, primary first: a
    ``<GENERATED>-k`` argument of modality *m* resolves to node *k*'s output of
    modality *m*.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    domain: str
    description: str
    args: tuple[ArgSpec, ...]
    outputs: tuple[Modality, ...]

    def arg(self, name: str) -> ArgSpec | None:
        return next((a for a in self.args if a.name == name), None)

    @property
    def required_args(self) -> tuple[ArgSpec, ...]:
        return tuple(a for a in self.args if a.required)

    def produces(self, modality: Modality | str) -> bool:
        return Modality(modality) in self.outputs


T, IMG, A, V, TB, J = Modality.TEXT, Modality.IMAGE, Modality.AUDIO, Modality.VIDEO, Modality.TABLE, Modality.JSON


def _a(name: str, modality: Modality, required: bool = True, description: str = "") -> ArgSpec:
    return ArgSpec(name=name, modality=modality, required=required, description=description)


_TEXT = _a("text", T)
_IMAGE = _a("image", IMG)
_AUDIO = _a("audio", A)

_TABLE: tuple[TaskType, ...] = (
    # --- natural language -------------------------------------------------
    TaskType(
        name="text-classification",
        domain="nlp",
        description="Label a text (sentiment, topic, ...).",
        args=(_TEXT,),
        outputs=(T, J),
    ),
    TaskType(
        name="token-classification",
        domain="nlp",
        description="Find entities or tags in a text (named entities, parts of speech).",
        args=(_TEXT,),
        outputs=(T, J),
    ),
    TaskType(
        name="text2text-generation",
        domain="nlp",
        description="Rewrite a text into another text following an instruction (paraphrase, correction, ...).",
        args=(_TEXT,),
        outputs=(T,),
    ),
    TaskType(
        name="summarization",
        domain="nlp",
        description="Summarize a long text into a short one.",
        args=(_TEXT,),
        outputs=(T,),
    ),
    TaskType(
        name="translation",
        domain="nlp",
        description="Translate a text into another language.",
        args=(_TEXT, _a("target_language", T, required=False, description="e.g. 'French'")),
        outputs=(T,),
    ),
    TaskType(
        name="question-answering",
        domain="nlp",
        description="Answer a question from a context text (extractive).",
        args=(_a("text", T, description="the question"), _a("context", T, description="the text to search")),
        outputs=(T, J),
    ),
    TaskType(
        name="conversational",
        domain="nlp",
        description="Reply to a message as a chat assistant.",
        args=(_TEXT,),
        outputs=(T,),
    ),
    TaskType(
        name="text-generation", domain="nlp", description="Continue or complete a text.", args=(_TEXT,), outputs=(T,)
    ),
    TaskType(
        name="sentence-similarity",
        domain="nlp",
        description="Score how similar two sentences are.",
        args=(_TEXT, _a("text2", T, description="the sentence to compare with")),
        outputs=(T, J),
    ),
    TaskType(
        name="zero-shot-classification",
        domain="nlp",
        description="Label a text with candidate labels given at run time.",
        args=(_TEXT, _a("labels", T, description="comma-separated candidate labels")),
        outputs=(T, J),
    ),
    TaskType(
        name="feature-extraction", domain="nlp", description="Embed a text as a vector.", args=(_TEXT,), outputs=(J,)
    ),
    TaskType(
        name="tabular-classification",
        domain="tabular",
        description="Classify the rows of a table (CSV).",
        args=(_a("table", TB),),
        outputs=(T, J),
    ),
    # --- vision -----------------------------------------------------------
    TaskType(
        name="object-detection",
        domain="cv",
        description="Find and locate objects in an image (boxes drawn on a copy of the image).",
        args=(_IMAGE,),
        outputs=(IMG, T, J),
    ),
    TaskType(
        name="image-classification",
        domain="cv",
        description="Say what an image shows, as labels.",
        args=(_IMAGE,),
        outputs=(T, J),
    ),
    TaskType(
        name="image-to-image",
        domain="cv",
        description="Transform an image into another image.",
        args=(_IMAGE, _a("text", T, required=False, description="what to change")),
        outputs=(IMG,),
    ),
    TaskType(
        name="image-to-text",
        domain="cv",
        description="Describe (caption) an image in words.",
        args=(_IMAGE,),
        outputs=(T,),
    ),
    TaskType(
        name="text-to-image",
        domain="cv",
        description="Draw an image from a text description.",
        args=(_TEXT,),
        outputs=(IMG,),
    ),
    TaskType(
        name="text-to-video",
        domain="cv",
        description="Make a short video from a text description.",
        args=(_TEXT,),
        outputs=(V,),
    ),
    TaskType(
        name="visual-question-answering",
        domain="cv",
        description="Answer a question about an image.",
        args=(_IMAGE, _a("text", T, description="the question")),
        outputs=(T,),
    ),
    TaskType(
        name="document-question-answering",
        domain="cv",
        description="Answer a question about a document image (scan, receipt, form).",
        args=(_IMAGE, _a("text", T, description="the question")),
        outputs=(T,),
    ),
    TaskType(
        name="image-segmentation",
        domain="cv",
        description="Split an image into labelled regions (masks drawn on a copy of the image).",
        args=(_IMAGE,),
        outputs=(IMG, T, J),
    ),
    TaskType(
        name="depth-estimation",
        domain="cv",
        description="Estimate the depth of an image, as an image.",
        args=(_IMAGE,),
        outputs=(IMG,),
    ),
    # --- audio ------------------------------------------------------------
    TaskType(
        name="text-to-speech", domain="audio", description="Read a text aloud, as audio.", args=(_TEXT,), outputs=(A,)
    ),
    TaskType(
        name="automatic-speech-recognition",
        domain="audio",
        description="Transcribe speech audio to text.",
        args=(_AUDIO,),
        outputs=(T,),
    ),
    TaskType(
        name="audio-to-audio",
        domain="audio",
        description="Transform audio into audio (enhancement, source separation).",
        args=(_AUDIO,),
        outputs=(A,),
    ),
    TaskType(
        name="audio-classification", domain="audio", description="Label an audio clip.", args=(_AUDIO,), outputs=(T, J)
    ),
)

TASK_TYPES: dict[str, TaskType] = {t.name: t for t in _TABLE}

#: Task types no transformers model family serves, and why: they run through the remote backend only
#: (``tasks/experts/local/`` runs every other one).
NOT_SERVED_LOCALLY: dict[str, str] = {
    "tabular-classification": (
        "transformers has no tabular classification models (the Hub's are scikit-learn / skops pipelines)"
    ),
    "text-to-image": "transformers has no text-to-image models (they are diffusers pipelines)",
    "text-to-video": "transformers has no text-to-video models (they are diffusers pipelines)",
    "audio-to-audio": (
        "transformers has no audio-to-audio pipeline (the Hub's speech enhancement and separation models are "
        "SpeechBrain / Asteroid models)"
    ),
}

#: Task types of the table the remote backend does not run, and why (``tasks/experts/remote/`` runs every other one).
NOT_SERVED_REMOTELY: dict[str, str] = {
    "depth-estimation": "huggingface_hub's InferenceClient has no depth-estimation call",
}

#: Task types the local backend executes: what the planner is offered when nothing narrows it down.
EXECUTABLE_TASKS: frozenset[str] = frozenset(TASK_TYPES) - frozenset(NOT_SERVED_LOCALLY)


def normalize_task_name(name: str) -> str:
    """Map spellings such as ``Image-to-Text``, ``image_to_text`` or ``image to text`` to the table's name."""
    return "-".join(name.strip().lower().replace("_", " ").replace("-", " ").split())
