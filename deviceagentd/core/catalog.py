"""The products known to this gateway: every `*.json` DeviceSpec in the products directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deviceagentd.core.spec import ProductSpec, SpecError, SpecProblem, load_spec_file


@dataclass(frozen=True)
class Catalog:
    products: dict[str, ProductSpec]

    def get(self, product_id: str) -> ProductSpec | None:
        return self.products.get(product_id)

    def __contains__(self, product_id: object) -> bool:
        return product_id in self.products


def load_catalog(directory: Path) -> Catalog:
    """Load every product file; raise SpecError with all problems of all files."""
    if not directory.is_dir():
        raise SpecError([SpecProblem(str(directory), "$", "products directory does not exist")])
    problems: list[SpecProblem] = []
    products: dict[str, ProductSpec] = {}
    for path in sorted(directory.glob("*.json")):
        try:
            spec = load_spec_file(path)
        except SpecError as exc:
            problems.extend(exc.problems)
            continue
        products[spec.product_id] = spec
    if problems:
        raise SpecError(problems)
    return Catalog(products)
