"""Request bodies (validated, camelCase as in the seed's API) and the JSON of stored records."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic.alias_generators import to_camel

from .._records import AgentResult, Record
from .._results.inspect import is_stale
from .._sanitize import is_clean, jsonable

MAX_TEXT = 100_000  # characters of a task or of additional instructions

def plain_id(value: str) -> str:
    """An id as given (422 for blank ids, NUL or a lone surrogate: ids are never rewritten,
    not even stripped)."""
    if not value.strip():
        raise ValueError("must not be blank")
    if not is_clean(value):
        raise ValueError("must be plain text: it contains a NUL character or a lone surrogate")
    return value


Id = Annotated[
    str, StringConstraints(min_length=1, max_length=255),
    AfterValidator(plain_id),
]
Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT)]
RecursionLimit = Annotated[int, Field(ge=1, le=10_000)]
MaxRetries = Annotated[int, Field(ge=0, le=10)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, frozen=True)


class ExecuteRequest(_Body):
    """``POST /api/agents/execute``: run the graph on a task."""

    agent_id: Id = Field(description="The agent the execution belongs to.")
    task: Text = Field(description="What to do; a user message when the state has messages.")
    thread_id: Id | None = Field(
        None, description="Continue this thread (default: a new thread).")
    checkpoint_id: Id | None = Field(
        None, description="Start from this checkpoint of the agent (its thread is used).")
    quest_id: Id | None = None
    estimated_tokens: Annotated[int, Field(ge=0)] | None = Field(
        None, description="The caller's estimate, kept in the result's metadata.")
    recursion_limit: RecursionLimit | None = Field(
        None, description="Super-steps allowed per run (default: the server's).")
    max_retries: MaxRetries | None = Field(
        None, description="Retries after a failure, each from the last checkpoint.")


class ResumeRequest(_Body):
    """``POST /api/agents/{agentId}/resume``: continue from one of the agent's checkpoints."""

    checkpoint_id: Id = Field(description="The checkpoint to continue from.")
    additional_instructions: Text | None = Field(
        None, description="Added to the state as a new user message.")
    resume: Any = Field(
        None, description="The value for Command(resume=...), for a run stopped at interrupt().")
    recursion_limit: RecursionLimit | None = None
    max_retries: MaxRetries | None = None

    @model_validator(mode="after")
    def _resume_not_null(self) -> ResumeRequest:
        if "resume" in self.model_fields_set and self.resume is None:
            raise ValueError(
                "resume must be a JSON value other than null (LangGraph cannot resume with "
                "None); leave it out to continue without one"
            )
        return self

    @property
    def has_resume(self) -> bool:
        """Whether the body carries a value for ``Command(resume=...)``."""
        return self.resume is not None


def record_json(record: Record) -> dict[str, Any]:
    """A stored record as JSON with camelCase keys (datetimes as ISO 8601); a result also says
    whether it is ``stale`` (running, but unchanged for long: see `is_stale`)."""
    data = {to_camel(key): jsonable(value) for key, value in record.to_dict().items()}
    if isinstance(record, AgentResult):
        data["stale"] = is_stale(record)
    return data


def camel_json(data: Any) -> Any:
    """Plain data (dicts, lists, records' ``to_dict``) as JSON with camelCase keys, at every
    depth."""
    if isinstance(data, dict):
        return {to_camel(str(k)): camel_json(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [camel_json(v) for v in data]
    return jsonable(data)


def page_json(page: Any) -> dict[str, Any]:
    """A page of records: ``{"items": [...], "nextCursor": ...}``."""
    return {"items": [record_json(r) for r in page], "nextCursor": page.next_cursor}
