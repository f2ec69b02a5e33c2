"""Which of the images dockertask made `dockertask images prune` removes: those nothing names any more.

- suite images (``pytest --dockertask-image``, ``@pytest.mark.dockertask``): a cache of a checkout,
  made again from it when needed, one per content;
- ImageSpec images: with FILE.py arguments, those the files' ImageSpecs do not build; without, all but
  the newest of each ImageSpec name (an edit to a spec makes a new tag and leaves the old one);
- dockertask's default runtime images of this host's Python other than the current one (made by an
  older dockertask, or from an older Dockerfile); those of another Python are another host's;
- images of ours left without a tag.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dockertask.backends.base import ImageInfo

SUITE_LABEL = "dockertask.suite"  # pytest/checkout.LABEL (not imported: that module is the plugin's)


def unused(images: list[ImageInfo], default_ref: str, keep: set[str] | None = None) -> list[tuple[ImageInfo, str]]:
    """The images to remove, each with why; ``keep``: the refs the given files' ImageSpecs build."""
    out: list[tuple[ImageInfo, str]] = []
    newest: dict[str, ImageInfo] = {}
    default_repo, _, default_tag = default_ref.rpartition(":")
    python = default_tag.split("-")[0]  # "py3.11"
    for image in images:
        kind = image.labels.get("dockertask.kind", "")
        if not image.tags:
            out.append((image, "no tag"))
        elif SUITE_LABEL in image.labels:
            out.append((image, "suite image (made again from the checkout when needed)"))
        elif kind == "imagespec":
            if keep is not None:
                if not set(image.tags) & keep:
                    out.append((image, "no ImageSpec of the given files builds it"))
                continue
            name = image.labels.get("dockertask.imagespec", image.ref)
            if name in newest and _when(newest[name]) >= _when(image):
                out.append((image, f"an older build of ImageSpec {name!r}"))
                continue
            if name in newest:
                out.append((newest[name], f"an older build of ImageSpec {name!r}"))
            newest[name] = image
        elif kind == "default" and default_ref not in image.tags and any(
                t.startswith(f"{default_repo}:{python}-") for t in image.tags):
            out.append((image, f"an older default runtime image (the current one is {default_ref})"))
    return out


def _when(image: ImageInfo) -> float:
    try:
        return float(image.created)  # the engine's seconds since the epoch
    except ValueError:
        return 0.0
