"""Uplink topics from their templates (config.UplinkTopics): the site and device filled in."""

from __future__ import annotations

from dataclasses import dataclass

from deviceagentd.config import UplinkTopics


def render(template: str, site_id: str, device_id: str = "") -> str:
    return template.replace("{siteId}", site_id).replace("{deviceId}", device_id)


@dataclass(frozen=True)
class SiteTopics:
    """The templates of one site; device topics are rendered per message."""

    templates: UplinkTopics
    site_id: str

    def device(self, template: str, device_id: str) -> str:
        return render(template, self.site_id, device_id)

    @property
    def site_prefix(self) -> str:
        """`sites/<siteId>/` by default: the status topic's levels up to the site id (check-config
        makes {siteId} a whole level of every template)."""
        levels = self.templates.gateway_status.split("/")
        return "/".join(levels[: levels.index("{siteId}") + 1]).replace("{siteId}", self.site_id) + "/"

    @property
    def status(self) -> str:
        return render(self.templates.gateway_status, self.site_id)

    @property
    def health(self) -> str:
        return render(self.templates.gateway_health, self.site_id)
