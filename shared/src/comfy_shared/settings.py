"""Settings parts shared by every process, plus loading with clear errors and a generated CLI.

Each service defines one ``BaseSettings`` subclass of :class:`CommonSettings` with its own
``env_prefix``. This module reads no environment by itself: callers pass argv and get settings.
Precedence: command-line flag, then environment variable, then ``.env`` file, then default.

Secrets (:data:`InternalToken`) are ``SecretStr``: a settings repr or dump shows ``**********``,
and an invalid one is reported without its value.
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar, get_args, get_origin

from pydantic import (
    AfterValidator,
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from comfy_shared.errors import SettingsError
from comfy_shared.net_guard import AllowList
from comfy_shared.outputs import OutputStoreConfig
from comfy_shared.redis_client import (
    CLUSTER_SCHEMES,
    DEFAULT_SENTINEL_MASTER,
    RedisTarget,
    parse_sentinels,
)
from comfy_shared.redis_keys import DEFAULT_PREFIX
from comfy_shared.url_inputs import UrlFetcher
from comfy_shared.workflows import DEFAULT_TEMPLATES_DIR

LogLevel = Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"]

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://", *CLUSTER_SCHEMES)

NODE_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
"""A node's (a process's) name: a Redis key part and a filter of the task list."""
INTERNAL_TOKEN_ENV = "COMFY_INTERNAL_TOKEN"
"""One variable for the service and the balancer alike (each also reads its prefixed name)."""
MIN_INTERNAL_TOKEN_CHARS = 16


def _long_enough(token: SecretStr) -> SecretStr:
    if len(token.get_secret_value()) < MIN_INTERNAL_TOKEN_CHARS:
        raise ValueError(
            f"must be at least {MIN_INTERNAL_TOKEN_CHARS} characters "
            "(e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return token


InternalToken = Annotated[SecretStr, AfterValidator(_long_enough)]
"""The bearer token a balancer sends to its services, and they require when set."""


def internal_token_field(env_prefix: str, description: str) -> Any:
    """The ``internal_token`` field: read from ``<PREFIX>INTERNAL_TOKEN`` or, shared by every
    process of a deployment, :data:`INTERNAL_TOKEN_ENV`."""
    return Field(
        default=None,
        validation_alias=AliasChoices(f"{env_prefix}INTERNAL_TOKEN", INTERNAL_TOKEN_ENV),
        description=description,
    )


class CommonSettings(BaseSettings):
    """Fields every comfy-stack process has. Subclasses set ``env_prefix``."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="Redis connection URL (redis://, rediss:// or unix://; redis+cluster:// or "
        "rediss+cluster:// names a seed node of a Redis Cluster).",
    )
    redis_sentinels: str = Field(
        default="",
        description="Redis Sentinel instances, HOST:PORT comma-separated. Set, every "
        "connection goes to the primary they monitor as --redis-sentinel-master and follows "
        "it when they promote a replica; --redis-url then gives only the scheme, user, "
        "password and database.",
    )
    redis_sentinel_master: str = Field(
        default=DEFAULT_SENTINEL_MASTER, description="The name the sentinels monitor Redis under."
    )
    redis_sentinel_password: SecretStr | None = Field(
        default=None, description="The sentinels' own password (their requirepass), if any."
    )
    redis_prefix: str = Field(
        default=DEFAULT_PREFIX,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Prefix of every Redis key, so several stacks can share one Redis.",
    )
    node_id: str = Field(
        default_factory=socket.gethostname,
        pattern=NODE_ID_PATTERN,
        description="Name of this process in logs and in Redis (default: the host name).",
    )
    log_level: LogLevel = Field(default="INFO", description="Lowest level that is logged.")
    log_json: bool = Field(default=False, description="Log JSON lines on stderr instead of text.")
    logdy: str | None = Field(
        default=None,
        pattern=r"^[^:\s]+:\d{1,5}$",
        description="HOST:PORT of logdy's socket input; log shipping is off when unset.",
    )
    logdy_buffer_lines: int = Field(
        default=10_000,
        ge=1,
        description="Lines kept in memory while logdy is slow or away (the oldest are dropped).",
    )

    templates_dir: Path = Field(
        default=DEFAULT_TEMPLATES_DIR,
        description="Folder of workflow templates (NAME.yaml + NAME.json); default: shipped set.",
    )
    max_image_bytes: int = Field(
        default=10 * 1024 * 1024, gt=0, description="Largest input image a template accepts."
    )

    @field_validator("redis_url")
    @classmethod
    def _known_redis_scheme(cls, value: str) -> str:
        if not value.startswith(_REDIS_SCHEMES):
            raise ValueError(f"must start with one of {', '.join(_REDIS_SCHEMES)}")
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinel_addresses(cls, value: str) -> str:
        parse_sentinels(value)
        return value

    @model_validator(mode="after")
    def _sentinels_or_cluster(self) -> CommonSettings:
        # A cluster fails over by itself; sentinels watch one primary, not a cluster.
        if self.redis_sentinels and self.redis_url.startswith(CLUSTER_SCHEMES):
            raise ValueError("redis_sentinels and a redis+cluster:// redis_url exclude each other")
        return self

    def redis_target(self) -> RedisTarget:
        """Where this process's Redis connections go (``redis_client``'s argument)."""
        password = self.redis_sentinel_password
        return RedisTarget(
            self.redis_url,
            sentinels=parse_sentinels(self.redis_sentinels),
            sentinel_master=self.redis_sentinel_master,
            sentinel_password=password.get_secret_value() if password else None,
        )


class ApiServerSettings(CommonSettings):
    """Fields of a process that serves the public API (the service and the balancer)."""

    host: str = Field(default="127.0.0.1", description="Interface to listen on.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port to listen on.")
    retention_s: int = Field(
        default=24 * 3600, gt=0, description="Seconds a finished task is kept in Redis."
    )
    url_inputs: bool = Field(
        default=True,
        description="Accept an https:// URL for an image parameter: fetched when the request "
        "arrives (public addresses only, no redirect, --max-image-bytes, "
        "--url-inputs-timeout-s), then handled as the bytes themselves.",
    )
    url_inputs_allow: str = Field(
        default="",
        description="Hosts and CIDR ranges an image URL may lead to although they are not "
        "public (loopback, private, link-local), comma-separated; http:// only for these.",
    )
    url_inputs_timeout_s: float = Field(
        default=15.0, gt=0, description="Seconds an image URL has to deliver the whole file."
    )
    outputs_backend: Literal["file", "s3"] = Field(
        default="file",
        description="The output store every service and balancer of a deployment shares: a "
        "directory (--outputs-dir, a volume) or an S3-compatible bucket (--outputs-s3-*). "
        "Each finished task's outputs are copied there from its ComfyUI, once per content.",
    )
    outputs_dir: Path = Field(
        default=Path("outputs"), description="Directory of the file output store."
    )
    outputs_max_bytes: int = Field(
        default=0,
        ge=0,
        description="Most bytes the output store may hold; past it, the outputs of the oldest "
        "finished tasks are deleted first (their downloads answer 410). 0: no cap.",
    )
    outputs_sweep_interval_s: float = Field(
        default=30.0, gt=0, description="Seconds between two retention sweeps of the outputs."
    )
    outputs_s3_bucket: str | None = Field(default=None, description="Bucket of the s3 store.")
    outputs_s3_prefix: str = Field(default="", description="Key prefix in the bucket.")
    outputs_s3_endpoint_url: str | None = Field(
        default=None, description="S3 endpoint of MinIO, R2 and the like; unset: AWS."
    )
    outputs_s3_region: str | None = Field(default=None, description="The bucket's region.")
    outputs_s3_addressing_style: Literal["auto", "virtual", "path"] = Field(
        default="auto", description="'path' for most self-hosted servers (MinIO)."
    )
    outputs_s3_access_key_id: str | None = Field(
        default=None,
        description="With the secret; unset: the standard AWS chain (AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY, ~/.aws, an instance role).",
    )
    outputs_s3_secret_access_key: SecretStr | None = Field(
        default=None, description="Pass it in the environment, never on a command line."
    )
    outputs_ttl_s: int = Field(
        default=24 * 3600,
        gt=0,
        description="Seconds a finished task's outputs are kept (at most --retention-s: "
        "the task itself is gone after that).",
    )
    events_maxlen: int = Field(
        default=1000, ge=10, description="Events kept per task (older ones are trimmed)."
    )
    max_body_bytes: int = Field(
        default=50 * 1024 * 1024, gt=0, description="Largest request body accepted (413 above)."
    )
    body_read_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a request's body may take to arrive, from the request's start "
        "(408 body_timeout after, and the connection is closed).",
    )
    max_graph_nodes: int = Field(
        default=1000, ge=1, description="Most nodes a graph may have (422 graph_too_large)."
    )
    max_string_bytes: int = Field(
        default=64 * 1024,
        ge=1,
        description="Longest string in a request body, in UTF-8 bytes: graph inputs, template "
        "parameters, client metadata (422 string_too_long). Images are bounded by "
        "--max-image-bytes instead.",
    )
    max_image_pixels: int = Field(
        default=25_000_000,
        ge=1,
        description="Most pixels (width x height, read from the header) of an input image "
        "(422 invalid_params).",
    )
    shutdown_grace_s: float = Field(
        default=5.0, ge=0, description="Seconds to finish requests on shutdown."
    )
    max_streams: int = Field(
        default=2000,
        ge=1,
        description="Event streams (SSE) open at once; one more gets 429 too_many_streams.",
    )
    sse_heartbeat_s: float = Field(
        default=15.0,
        gt=0,
        description="Seconds between comment lines on an idle event stream (keeps proxies open).",
    )

    @model_validator(mode="after")
    def _a_complete_output_store(self) -> Self:
        self.output_store()
        return self

    @field_validator("url_inputs_allow")
    @classmethod
    def _an_allow_list(cls, value: str) -> str:
        AllowList.parse(value)
        return value

    def url_fetcher(self) -> UrlFetcher | None:
        """What fetches image URLs (None: turned off)."""
        if not self.url_inputs:
            return None
        return UrlFetcher(
            AllowList.parse(self.url_inputs_allow),
            max_bytes=self.max_image_bytes,
            timeout_s=self.url_inputs_timeout_s,
        )

    def output_store(self) -> OutputStoreConfig:
        """The output store these settings name (checked when the settings load)."""
        return OutputStoreConfig(
            backend=self.outputs_backend,
            dir=self.outputs_dir,
            bucket=self.outputs_s3_bucket,
            prefix=self.outputs_s3_prefix,
            endpoint_url=self.outputs_s3_endpoint_url,
            region=self.outputs_s3_region,
            addressing_style=self.outputs_s3_addressing_style,
            access_key_id=self.outputs_s3_access_key_id,
            secret_access_key=self.outputs_s3_secret_access_key,
        )


S = TypeVar("S", bound=BaseSettings)


def env_var_name(settings_cls: type[BaseSettings], field_name: str) -> str:
    prefix = str(settings_cls.model_config.get("env_prefix", ""))
    return f"{prefix}{field_name}".upper()


def field_env_names(settings_cls: type[BaseSettings], field_name: str) -> list[str]:
    """The variables one field is read from, first match wins: its aliases if it has
    some (``AliasChoices``), else the prefixed name."""
    alias = settings_cls.model_fields[field_name].validation_alias
    if isinstance(alias, AliasChoices):
        return [choice for choice in alias.choices if isinstance(choice, str)]
    return [env_var_name(settings_cls, field_name)]


def env_var_names(settings_cls: type[BaseSettings]) -> set[str]:
    """Every environment variable the class reads (for checking deployment files)."""
    return {
        variable
        for name in settings_cls.model_fields
        for variable in field_env_names(settings_cls, name)
    }


def load_settings(settings_cls: type[S], **overrides: Any) -> S:
    """Build settings from the environment plus ``overrides``; errors name the variable."""
    try:
        return settings_cls(**overrides)
    except ValidationError as exc:
        raise SettingsError(_describe(settings_cls, exc)) from exc


def settings_from_argv(
    settings_cls: type[S], argv: Sequence[str] | None, *, prog: str, description: str
) -> S:
    """Parse command-line flags generated from the settings fields, then load the settings."""
    parser = build_arg_parser(settings_cls, prog=prog, description=description)
    given = {
        name: value for name, value in vars(parser.parse_args(argv)).items() if value is not None
    }
    return load_settings(settings_cls, **given)


def build_arg_parser(
    settings_cls: type[BaseSettings], *, prog: str, description: str
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="Every flag can also be set by the environment variable named in its help.",
    )
    for name, field in settings_cls.model_fields.items():
        _add_flag(parser, settings_cls, name, field)
    return parser


def _add_flag(
    parser: argparse.ArgumentParser, settings_cls: type[BaseSettings], name: str, field: FieldInfo
) -> None:
    flag = "--" + name.replace("_", "-")
    default = "" if field.is_required() else f" Default: {_default_text(field)}."
    variables = " or ".join(field_env_names(settings_cls, name))
    help_text = f"{field.description or ''} [env {variables}]{default}"
    kwargs: dict[str, Any] = {"dest": name, "default": None, "help": help_text}
    annotation = field.annotation
    if annotation is bool:
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
    elif get_origin(annotation) is list:
        parser.add_argument(flag, action="append", metavar="VALUE", **kwargs)
    elif get_origin(annotation) is Literal:
        parser.add_argument(flag, choices=[str(c) for c in get_args(annotation)], **kwargs)
    else:
        parser.add_argument(flag, metavar=name.split("_")[-1].upper(), **kwargs)


def _default_text(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "computed"
    return repr(field.default)


def _describe(settings_cls: type[BaseSettings], exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        field_name = _field_named_by(settings_cls, str(error["loc"][0]) if error["loc"] else "?")
        variable = " or ".join(_env_names_or_guess(settings_cls, field_name))
        flag = "--" + field_name.replace("_", "-")
        received = f" (got {error['input']!r})" if "input" in error else ""
        if _is_secret(settings_cls, field_name):
            received = ""  # never echo a secret, not even a wrong one
        problems.append(f"{variable} / {flag}: {error['msg']}{received}")
    return "invalid settings:\n  " + "\n  ".join(problems)


def _field_named_by(settings_cls: type[BaseSettings], loc: str) -> str:
    """A field with aliases is reported under the alias that was read: map it back."""
    if loc in settings_cls.model_fields:
        return loc
    for name in settings_cls.model_fields:
        if loc in field_env_names(settings_cls, name):
            return name
    return loc


def _env_names_or_guess(settings_cls: type[BaseSettings], field_name: str) -> list[str]:
    if field_name in settings_cls.model_fields:
        return field_env_names(settings_cls, field_name)
    return [env_var_name(settings_cls, field_name)]


def _is_secret(settings_cls: type[BaseSettings], field_name: str) -> bool:
    field = settings_cls.model_fields.get(field_name)
    return field is not None and _mentions_secret(field.annotation)


def _mentions_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_mentions_secret(arg) for arg in get_args(annotation))
