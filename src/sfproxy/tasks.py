"""Chat clients' background tasks, recognised and answered without an image.

Chat front ends send their housekeeping prompts (a title for the chat, tags, follow-up
questions, ...) to the chat model when no separate task model is set. Against an image model
each would be a paid image, and the chat's title would come back as `![image](…)`. These are
recognised by a few stable fragments of the clients' own templates (never by the templates
themselves, which change between versions and can be edited by admins) and answered in the
form each client parses, built from the conversation: no upstream call, nothing charged.

What each recogniser relies on, read in the clients' sources:

- **Open WebUI** (`backend/open_webui/config.py`, `DEFAULT_*_GENERATION_PROMPT_TEMPLATE`;
  sent by `routers/tasks.py` as the only message, role `user`, `stream: false`, the task named
  only in a `metadata` field that is not forwarded to OpenAI-compatible APIs). The prompt
  begins `### Task:` and holds the history as `USER: …` / `ASSISTANT: …` lines inside
  `<chat_history>` (`utils/misc.py` `get_messages_content`). The task is told apart by the
  JSON key its `### Output:` section asks for: `"title"`, `"tags"`, `"follow_ups"`,
  `"queries"`, `"text"` (autocomplete), `"prompt"` (image prompt). `utils/middleware.py`
  reads `choices[0].message.content`, keeps what lies between the first `{` and the last `}`
  and `json.loads` it; an empty title falls back to the first message. `{"queries": []}`
  skips the web search ("No search query generated"; retrieval falls back to the user's
  message). The emoji task (call mode, `max_tokens` 4) is "…facial expression through a
  fitting emoji…" with the text in "Message: ```…```"; the front end keeps the first emoji.
  With a tool enabled (default function calling), `utils/middleware.py` sends a `system`
  "Available Tools: […] … `tool_calls` …" and reads `{"tool_calls": [...]}`: none are chosen.
- **LibreChat** (`@librechat/agents` `src/utils/title.ts`, called from the agents client's
  `titleConvo`, not streamed). `titleMethod: completion` (the default) sends one `user`
  message, "Provide a concise, 5-word-or-less title for the conversation, …" then
  `Conversation:` / `User: …` / `AI: …`, and uses the trimmed content. `structured` sends
  "Analyze this conversation and provide: 1. The detected language … 2. A concise title …"
  through `withStructuredOutput`, answered here as JSON `{"title": …}`. The legacy client
  (`api/app/clients/prompts/titlePrompts.js`) puts "Write a concise title for this
  conversation …" in the `system` message.
- **Cherry Studio** (`TopicNamingService`, and `prompts.title` in its locales before that):
  `system` "Summarize the conversation into a title in {language} within 10 words (older:
  characters) ignoring instructions … Output only the title string …", and the conversation
  as a JSON list of `{"role", "mainText"}` in the `user` message; the text is the title.
- **LobeChat** (`packages/prompts` `chainSummaryTitle`, formerly `src/chains/summaryTitle.ts`):
  `system` "You are a professional conversation summarizer. Generate a concise title …
  Maximum N characters" (older: "… summarize the user's conversation into a title within
  10 characters", or in Chinese "…会话总结为 10 个字以内的标题"), the conversation in the
  `user` message as `user: …` lines or `<user>…</user>` blocks. Recent versions ask for a
  `json_schema` (`topic_title`); the title is then answered as JSON.

Titles are a few words of the conversation's first user message, cut to the length the
template asks for. Only a bounded start (and for Open WebUI's image prompt, end) of each
message is read, with substring searches: linear, whatever a client sends.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .protocol import ChatCompletionRequest, ChatMessage, JsonAnswer, TextPart
from .settings import Settings

# Characters of a message's start read for markers and the conversation's first message:
# every template's instructions and first history line fit well inside.
HEAD = 8192
# Characters of the latest user message's end read for Open WebUI's image prompt.
TAIL = 16384
# The emoji an image model answers with when asked for one.
IMAGE_EMOJI = "🎨"
FALLBACK_TITLE = "Image generation"
TITLE_WORDS = 5
TITLE_CHARS = 50


@dataclass(frozen=True, slots=True)
class TaskAnswer:
    """A recognised task: its name (the metric's label) and the assistant's answer."""

    task: str
    content: str


@dataclass(frozen=True, slots=True)
class TaskView:
    """The bounded parts of a chat request the recognisers read, with their folded forms."""

    prompt: str  # the start of the latest user message
    folded: str  # the same, casefolded
    system: str  # the start of the system (or developer) messages
    system_folded: str
    tail: str  # the end of the latest user message
    first_user: str  # the start of the request's first user message
    json_answer: JsonAnswer | None


def chat_task_answer(body: ChatCompletionRequest, settings: Settings) -> TaskAnswer | None:
    """The answer to a client's background task, or None for a request for images."""
    if settings.chat_tasks != "answer":
        return None
    request = task_view(body)
    for recognise in _RECOGNISERS:
        answer = recognise(request)
        if answer is not None:
            return answer
    return _pattern(request, settings.chat_task_patterns)


def task_view(body: ChatCompletionRequest) -> TaskView:
    """The parts of a request the recognisers read: at most HEAD or TAIL characters each."""
    users = [message for message in body.messages if message.role == "user"]
    latest = users[-1] if users else None
    prompt = _head(latest) if latest else ""
    systems = [m for m in body.messages if m.role in ("system", "developer")][:4]
    system = "\n".join(_head(message) for message in systems)[:HEAD]
    return TaskView(
        prompt=prompt,
        folded=prompt.casefold(),
        system=system,
        system_folded=system.casefold(),
        tail=_tail(latest) if latest else "",
        first_user=_head(users[0]) if len(users) > 1 else "",
        json_answer=body.json_answer,
    )


def _texts(message: ChatMessage) -> list[str]:
    content = message.content
    if isinstance(content, str):
        return [content]
    return [part.text for part in content or [] if isinstance(part, TextPart)]


def _head(message: ChatMessage) -> str:
    taken: list[str] = []
    size = 0
    for text in _texts(message):
        taken.append(text[: HEAD - size])
        size += len(taken[-1]) + 1
        if size >= HEAD:
            break
    return "\n".join(taken).lstrip()


def _tail(message: ChatMessage) -> str:
    taken: list[str] = []
    size = 0
    for text in reversed(_texts(message)):
        taken.append(text[-(TAIL - size) :])
        size += len(taken[-1]) + 1
        if size >= TAIL:
            break
    return "\n".join(reversed(taken))


# Open WebUI: the JSON key each task's output asks for, in an order where no template holds
# an earlier task's key.
_OPEN_WEBUI_KEYS = (
    ('"follow_ups"', "openwebui_follow_ups"),
    ('"tags"', "openwebui_tags"),
    ('"queries"', "openwebui_queries"),
    ('"title"', "openwebui_title"),
    ('"prompt"', "openwebui_image_prompt"),
    ('"text"', "openwebui_autocomplete"),
)


def _open_webui(request: TaskView) -> TaskAnswer | None:
    folded = request.folded
    system = request.system_folded
    if system.startswith("available tools:") and '"tool_calls"' in system:
        # Choosing tools for the turn: none, and the turn itself goes on to make its image.
        return TaskAnswer("openwebui_tools", json.dumps({"tool_calls": []}))
    if folded.startswith("your task is to reflect the speaker") and "message: ```" in folded:
        return TaskAnswer("openwebui_emoji", IMAGE_EMOJI)
    if not folded.startswith("### task:"):
        return None
    history = folded.find("<chat_history>")
    if history < 0:
        return None
    task = next((name for key, name in _OPEN_WEBUI_KEYS if key in folded[:history]), None)
    if task is None:
        return None
    if task == "openwebui_title":
        # Found again in the text as sent: casefolding may change lengths before it.
        title = short_title(_first_user_text(request.prompt, request.prompt.find("<chat_history>")))
        if "with an emoji" in folded[:history]:
            title = f"{IMAGE_EMOJI} {title}"
        answer: dict[str, Any] = {"title": title}
    elif task == "openwebui_tags":
        answer = {"tags": [FALLBACK_TITLE]}
    elif task == "openwebui_follow_ups":
        # An image model suggests no questions; Open WebUI then shows none.
        answer = {"follow_ups": []}
    elif task == "openwebui_queries":
        answer = {"queries": []}
    elif task == "openwebui_autocomplete":
        answer = {"text": ""}
    else:
        answer = {"prompt": _last_user_text(request.tail)}
    return TaskAnswer(task, json.dumps(answer, ensure_ascii=False))


def _librechat(request: TaskView) -> TaskAnswer | None:
    folded, system = request.folded, request.system_folded
    if "5-word-or-less title for the conversation" in folded and "only return the title" in folded:
        structured = False
    elif "analyze this conversation and provide" in folded and "detected language" in folded:
        structured = "concise title" in folded
        if not structured:
            return None
    elif "write a concise title for this conversation" in system:
        text = _first_user_text(request.system)
        return _title_answer("librechat_title", text, request, limit_from=system)
    else:
        return None
    # The instructions hold no "User:": the first one is the conversation's.
    text = _first_user_text(request.prompt)
    if structured and request.json_answer is None:
        # withStructuredOutput reads a JSON object (or, with tools, nothing it can use).
        return TaskAnswer("librechat_title", json.dumps({"title": short_title(text)}))
    return _title_answer("librechat_title", text, request, limit_from=folded)


def _cherry(request: TaskView) -> TaskAnswer | None:
    system = request.system_folded
    if "summarize the conversation into a title" not in system:
        return None
    if "output only the title" not in system:
        return None
    return _title_answer("cherry_topic", _main_text(request.prompt), request, limit_from=system)


def _lobe(request: TaskView) -> TaskAnswer | None:
    system = request.system_folded
    current = "conversation summarizer" in system and "concise title" in system
    older = "summarize" in system and ("into a title within" in system or "titles within" in system)
    if not (current or older or "会话总结为" in system):
        return None
    text = _first_user_text(request.prompt)
    return _title_answer("lobe_topic", text, request, limit_from=system)


_RECOGNISERS: tuple[Callable[[TaskView], TaskAnswer | None], ...] = (
    _open_webui,
    _librechat,
    _cherry,
    _lobe,
)


def _pattern(request: TaskView, patterns: list[str]) -> TaskAnswer | None:
    for pattern in patterns:
        folded = pattern.casefold()
        if folded in request.folded or folded in request.system_folded:
            text = _first_user_text(request.prompt) or request.first_user
            return _title_answer("pattern", text, request, limit_from="")
    return None


def _title_answer(task: str, text: str, request: TaskView, *, limit_from: str) -> TaskAnswer:
    title = short_title(text, max_chars=char_limit(limit_from))
    if request.json_answer is None:
        return TaskAnswer(task, title)
    answer: dict[str, str] = {"title": title}
    # Fill the string fields a client's JSON schema requires (LobeChat's topic_metadata).
    schema = (request.json_answer.json_schema or {}).get("schema")
    required = schema.get("required") if isinstance(schema, dict) else None
    if isinstance(required, list):
        if "description" in required:
            answer["description"] = " ".join(text.split())[:100] or title
        if "language" in required:
            answer["language"] = "English"
    return TaskAnswer(task, json.dumps(answer, ensure_ascii=False))


# Where a conversation embedded in a prompt marks a user's turn, and where that turn ends.
_USER_LABELS = ("USER:", "User:", "user:", "<user>")
_TURN_ENDS = (
    "\nASSISTANT:",
    "\nAssistant:",
    "\nassistant:",
    "\nAI:",
    "\nUSER:",
    "\nUser:",
    "\nuser:",
    "\n||>",
    "</user>",
    "</chat_history>",
    "</conversation>",
)
# A turn's text is read this far: a title needs its first words only.
_TURN_CHARS = 1000


def _first_user_text(text: str, start: int = 0) -> str:
    """The first user turn of a conversation written into `text` (after `start`)."""
    start = max(start, 0)
    found = [(at, label) for label in _USER_LABELS if (at := text.find(label, start)) >= 0]
    if not found:
        return ""
    at, label = min(found)
    turn = text[at + len(label) : at + len(label) + _TURN_CHARS]
    ends = [end for marker in _TURN_ENDS if (end := turn.find(marker)) >= 0]
    return turn[: min(ends, default=len(turn))].strip()


def _last_user_text(tail: str) -> str:
    """Open WebUI's image prompt: the history's last `USER:` turn, from the message's end."""
    end = tail.rfind("</chat_history>")
    at = tail.rfind("USER:", 0, end if end >= 0 else len(tail))
    if at < 0:
        return ""
    turn = tail[at + len("USER:") : end if end >= 0 else len(tail)]
    stop = turn.find("\nASSISTANT:")
    return turn[: stop if stop >= 0 else len(turn)].strip()


_DECODER = json.JSONDecoder()


def _main_text(prompt: str) -> str:
    """Cherry Studio's first `mainText` in the JSON conversation it sends."""
    key = prompt.find('"mainText"')
    if key < 0:
        return _first_user_text(prompt)
    quote = prompt.find('"', prompt.find(":", key + len('"mainText"')) + 1)
    if quote < 0:
        return ""
    try:
        value, _ = _DECODER.raw_decode(prompt, quote)
    except ValueError:
        # Cut off at HEAD: the part that was read is enough for a title.
        value = prompt[quote + 1 : quote + 1 + _TURN_CHARS]
    return value if isinstance(value, str) else ""


_EDGE_PUNCTUATION = string.punctuation + "“”‘’「」『』《》，。！？：；、…·"


def short_title(text: str, *, max_words: int = TITLE_WORDS, max_chars: int = TITLE_CHARS) -> str:
    """A few words of a user's message as a title: no options, no punctuation at the edges."""
    text = text[:_TURN_CHARS].split(" --", 1)[0]
    words = [word.strip(_EDGE_PUNCTUATION) for word in text.split()[:max_words]]
    title = " ".join(word for word in words if word)
    if len(title) > max_chars:
        cut = title.rfind(" ", 0, max_chars + 1)
        title = title[: cut if cut > 0 else max_chars].rstrip()
    if not title:
        return FALLBACK_TITLE
    return title[0].upper() + title[1:]


def char_limit(instructions: str, default: int = TITLE_CHARS) -> int:
    """The smallest "N characters" (or "N 个字") an instruction allows, else `default`."""
    limit = default
    for unit in ("characters", "个字", "字以内"):
        position = instructions.find(unit)
        while position >= 0:
            digits = instructions[max(0, position - 6) : position].rstrip()
            number = ""
            while digits and digits[-1] in "0123456789":
                number, digits = digits[-1] + number, digits[:-1]
            if number:
                limit = min(limit, max(1, int(number)))
            position = instructions.find(unit, position + len(unit))
    return limit
