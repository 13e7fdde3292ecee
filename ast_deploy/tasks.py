"""The restoration tasks AST was released for, with their official inference protocols."""

from __future__ import annotations

from dataclasses import dataclass

OFFICIAL_WEIGHTS_PAGE = "https://github.com/joshyZhou/AST#results"


@dataclass(frozen=True)
class Task:
    name: str
    title: str
    dataset: str
    architecture: str  # a name in ast_deploy.model.configs.ARCHITECTURES
    protocol: str  # see ast_deploy.protocols.parse_protocol
    weights_link: str  # where the official checkpoint is published (Baidu Netdisk, with its code)


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("derain", "rain-streak removal", "SPAD", "AST_B", "square-pad:128",
             "https://pan.baidu.com/s/1uqsXeztA55ny8vnQHfxmlA?pwd=h68m (code h68m)"),
        Task("deraindrop", "raindrop removal", "AGAN-Data", "AST_B", "tiles:384:80",
             "https://pan.baidu.com/s/1obhEpvWLV9FLF47FMcNX7g?pwd=astt (code astt)"),
        Task("dehaze", "dehazing", "Dense-Haze", "AST_B", "tiles:1152:384",
             "https://pan.baidu.com/s/1PeSaf-ZRwnMBjlNHGEkvzg?pwd=astt (code astt)"),
    )
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]
