"""Lifecycle generator: a population of channels living plausible lives, deterministic per seed.

`LifecycleGenerator.story(now_ms)` returns the events of one small story (an app session, a push
campaign, an email consent change, …) as envelope dicts without `offset`; the stream log assigns
offsets. Stream quirks (duplicates, late and skewed events, unknown types and fields) are applied
by `StreamQuirks` so they can be tuned or switched off.
"""

from __future__ import annotations

import base64
import dataclasses
import random
from collections.abc import Callable
from typing import Any

import orjson

from rtds_pipeline.protocol.timestamps import iso_ms

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

PLATFORM_WEIGHTS = {
    "IOS": 34, "ANDROID": 34, "AMAZON": 3, "WEB": 12, "EMAIL": 9, "SMS": 6, "OPEN": 2,
}
APP_PLATFORMS = ("IOS", "ANDROID", "AMAZON")
COUNTRIES = (("US", "en", "America/New_York", "-18000"), ("GB", "en", "Europe/London", "0"),
             ("DE", "de", "Europe/Berlin", "3600"), ("FR", "fr", "Europe/Paris", "3600"),
             ("BR", "pt", "America/Sao_Paulo", "-10800"), ("JP", "ja", "Asia/Tokyo", "32400"),
             ("US", "es", "America/Los_Angeles", "-28800"))
APP_VERSIONS = ("5.2.0", "5.3.1", "5.4.0", "6.0.0")
SCREENS = ("home", "search", "product", "cart", "checkout", "settings", "inbox", "profile")
CUSTOM_EVENTS = (("purchase", True), ("add_to_cart", True), ("viewed_product", False),
                 ("signup", False), ("share", False), ("level_complete", False))
CATEGORIES = ("promo", "onboarding", "retention", "transactional", "news")
ALERTS = ("Your order has shipped", "20% off today only", "We miss you!", "New arrivals are here",
          "Complete your profile", "Flash sale starts now")
BROWSERS = (("chrome", "chrome-131", "desktop"), ("safari", "safari-18", "mobile"),
            ("firefox", "firefox-133", "desktop"))
SENDERS = ("12345", "+15005550006")


@dataclasses.dataclass(eq=False)
class Channel:
    channel: str
    platform: str
    named_user_id: str | None
    contact_id: str
    country: tuple[str, str, str, str]
    app_version: str
    address: str | None = None
    first_opened: bool = False
    opted_in: bool = False
    last_push: tuple[str, str | None, int] | None = None  # push_id, group_id, time sent (ms)
    tags: list[str] = dataclasses.field(default_factory=list)
    device: dict[str, Any] | None = None


@dataclasses.dataclass
class Push:
    push_id: str
    group_id: str | None
    variant_id: int | None
    campaigns: list[str]
    sent_ms: int


class LifecycleGenerator:
    """Deterministic stories of a channel population. Not thread-safe; one per stream log."""

    def __init__(self, seed: int = 0, population: int = 2000) -> None:
        self.rng = random.Random(seed)
        self.population = population
        self.channels: list[Channel] = [self._new_channel() for _ in range(population)]
        self.by_platform: dict[str, list[Channel]] = {}
        for ch in self.channels:
            self.by_platform.setdefault(ch.platform, []).append(ch)
        self.recent_pushes: list[Push] = []
        self._pools: dict[tuple[str, ...], list[Channel]] = {}
        self._stories: list[tuple[Callable[[int], list[dict[str, Any]]], int]] = [
            (self._app_session, 40), (self._web_session, 8), (self._push_campaign, 5),
            (self._profile_change, 8), (self._email_consent, 5), (self._sms_consent, 5),
            (self._inbound_sms, 2), (self._message_center, 4), (self._in_app_scene, 6),
            (self._uninstall, 2), (self._open_channel, 2), (self._contact_change, 2),
        ]
        self._story_fns = [fn for fn, _ in self._stories]
        self._story_weights = [w for _, w in self._stories]

    # ---------------------------------------------------------------- identity helpers
    def uuid(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"

    def _new_channel(self, platform: str | None = None) -> Channel:
        r = self.rng
        platform = platform or r.choices(list(PLATFORM_WEIGHTS), list(PLATFORM_WEIGHTS.values()))[0]
        named = f"user-{r.randrange(10**6):06d}" if r.random() < 0.5 else None
        ch = Channel(self.uuid(), platform, named, self.uuid(), r.choice(COUNTRIES),
                     r.choice(APP_VERSIONS))
        if platform == "EMAIL":
            ch.address = f"{named or 'anon' + str(r.randrange(10**6))}@example.com"
        elif platform == "SMS":
            ch.address = f"1555{r.randrange(10**7):07d}"
        return ch

    def pick(self, *platforms: str) -> Channel:
        pool = self._pools.get(platforms)
        if pool is None:
            pool = self._pools[platforms] = [c for p in platforms for c in self.by_platform.get(p, ())]
        if not pool:
            ch = self._new_channel(platforms[0])
            self._adopt(ch)
            return ch
        return self.rng.choice(pool)

    def _adopt(self, ch: Channel) -> None:
        self._pools.clear()
        self.channels.append(ch)
        self.by_platform.setdefault(ch.platform, []).append(ch)

    def _replace(self, old: Channel) -> None:
        """An uninstalled channel leaves; a fresh install of the same platform arrives."""
        self.by_platform[old.platform].remove(old)
        self.channels.remove(old)
        self._adopt(self._new_channel(old.platform))

    # ---------------------------------------------------------------- device objects
    def app_device(self, ch: Channel, *, named: bool = True) -> dict[str, Any]:
        if ch.device is None:
            country, lang, tz, offset = ch.country
            model = {"IOS": "iPhone15,2", "ANDROID": "Pixel 8", "AMAZON": "KFTRWI"}[ch.platform]
            os_ = {"IOS": "17.5", "ANDROID": "14", "AMAZON": "7.3"}[ch.platform]
            ch.device = {
                "channel": ch.channel,
                "device_type": ch.platform,
                f"{ch.platform.lower()}_channel": ch.channel,
                "attributes": {
                    "app_package_name": "com.example.shop", "app_version": ch.app_version,
                    "background_push_enabled": "true", "device_model": model, "device_os": os_,
                    "iana_timezone": tz, "locale_country_code": country,
                    "locale_language_code": lang, "locale_timezone": offset, "locale_variant": "",
                    "location_enabled": "true" if ch.channel[0] < "8" else "false",
                    "location_permission": "ALWAYS_ALLOWED" if ch.channel[0] < "8" else "NOT_ALLOWED",
                    "push_opt_in": "true" if ch.channel[1] < "c" else "false",
                    "ua_sdk_version": "18.1.0",
                },
                "identifiers": {
                    "com.urbanairship.limited_ad_tracking_enabled": "false",
                    "com.urbanairship.vendor": ch.contact_id,
                    "session_id": ch.channel[:8],
                },
            }
        dev = ch.device
        if named and ch.named_user_id:
            dev = {**dev, "named_user_id": ch.named_user_id}
        return dev

    def web_device(self, ch: Channel, *, attributes: bool = True, locale: bool = True) -> dict[str, Any]:
        dev: dict[str, Any] = {"channel": ch.channel, "device_type": "WEB"}
        if ch.named_user_id:
            dev["named_user_id"] = ch.named_user_id
        if attributes:
            name, version, kind = BROWSERS[int(ch.channel[0], 16) % len(BROWSERS)]
            attrs = {"web_browser_name": name, "web_browser_type": kind,
                     "web_browser_version": version, "ua_sdk_version": "2.6.0",
                     "push_opt_in": "true",
                     "web_user_agent_string": f"Mozilla/5.0 ({kind}) {name}/{version}"}
            if locale:
                country, lang, tz, offset = ch.country
                attrs.update(iana_timezone=tz, locale_country_code=country,
                             locale_language_code=lang, locale_timezone=offset, locale_variant="")
            dev["attributes"] = attrs
        return dev

    def address_device(self, ch: Channel, *, named_key: str = "named_user_id") -> dict[str, Any]:
        dev: dict[str, Any] = {"channel": ch.channel, "device_type": ch.platform,
                               "delivery_address": ch.address}
        if ch.named_user_id:
            dev[named_key] = ch.named_user_id
        return dev

    def sms_device(self, ch: Channel) -> dict[str, Any]:
        return {"channel": ch.channel, "device_type": "SMS", "delivery_address": ch.address,
                "identifiers": {"sender": SENDERS[0]}}

    def open_device(self, ch: Channel) -> dict[str, Any]:
        dev: dict[str, Any] = {"channel": ch.channel, "device_type": "OPEN",
                               "open_platform_name": "smart_tv"}
        if ch.named_user_id:
            dev["named_user_id"] = ch.named_user_id
        return dev

    def any_device(self, ch: Channel) -> dict[str, Any]:
        if ch.platform in APP_PLATFORMS:
            return self.app_device(ch)
        if ch.platform == "WEB":
            return self.web_device(ch)
        if ch.platform == "OPEN":
            return self.open_device(ch)
        return self.address_device(ch)

    # ---------------------------------------------------------------- envelope
    def event(self, etype: str, occurred_ms: int, processed_ms: int, device: dict[str, Any] | None,
              body: dict[str, Any] | None, ch: Channel | None = None, **top: Any) -> dict[str, Any]:
        # Times stay integers (epoch ms) until the stream log places the event on its clock.
        ev: dict[str, Any] = {"id": self.uuid(), "type": etype, "occurred": occurred_ms,
                              "processed": processed_ms}
        if device is not None:
            ev["device"] = device
        if body is not None:
            ev["body"] = body
        if ch is not None and device is not None and ch.platform != "SMS":
            user = {"contact_id": ch.contact_id}
            if ch.named_user_id:
                user["named_user_id"] = ch.named_user_id
            ev["user"] = user
        ev.update(top)
        return ev

    def lag(self) -> int:
        """Device-to-Airship delay: mostly seconds, sometimes minutes."""
        r = self.rng.random()
        if r < 0.85:
            return self.rng.randrange(50, 5_000)
        if r < 0.98:
            return self.rng.randrange(5_000, 600_000)
        return self.rng.randrange(600_000, 6 * HOUR_MS)

    def associated(self, push: Push, *, with_time: bool = True) -> dict[str, Any]:
        ap: dict[str, Any] = {"push_id": push.push_id}
        if push.group_id:
            ap["group_id"] = push.group_id
        if push.variant_id is not None:
            ap["variant_id"] = push.variant_id
        if with_time and not push.group_id:
            ap["time"] = iso_ms(push.sent_ms)
        if push.campaigns:
            ap["campaigns"] = {"categories": push.campaigns}
        return ap

    def push_fields(self, push: Push) -> dict[str, Any]:
        out: dict[str, Any] = {"push_id": push.push_id}
        if push.group_id:
            out["group_id"] = push.group_id
        if push.campaigns:
            out["campaigns"] = {"categories": push.campaigns}
        return out

    def _recent_push(self, now: int) -> Push | None:
        if not self.recent_pushes or self.rng.random() < 0.3:
            return None
        return self.rng.choice(self.recent_pushes[-20:])

    # ---------------------------------------------------------------- stories
    def story(self, now_ms: int) -> list[dict[str, Any]]:
        fn = self.rng.choices(self._story_fns, self._story_weights)[0]
        return fn(now_ms)

    def _app_session(self, now: int) -> list[dict[str, Any]]:
        r = self.rng
        ch = self.pick(*APP_PLATFORMS)
        dev = self.app_device(ch)
        t = now - r.randrange(0, 60_000)
        out: list[dict[str, Any]] = []
        if not ch.first_opened:
            ch.first_opened = True
            out.append(self.event("FIRST_OPEN", t, t + self.lag(), dev, None, ch))
        session = self.uuid()
        open_body: dict[str, Any] = {"session_id": session}
        # Airship keeps last_delivered for 12 h; a push sent after this session cannot be it.
        if ch.last_push and 0 <= t - ch.last_push[2] < 12 * HOUR_MS:
            push = next((p for p in self.recent_pushes if p.push_id == ch.last_push[0]), None)
            if push:
                open_body["last_delivered"] = self.associated(push)
                if r.random() < 0.4:
                    open_body["triggering_push"] = self.associated(push)
        out.append(self.event("OPEN", t, t + self.lag(), dev, open_body, ch))
        prev = None
        for _ in range(r.randrange(1, 5)):
            t += r.randrange(2_000, 90_000)
            screen = r.choice(SCREENS)
            body = {"session_id": session, "viewed_screen": screen,
                    "duration": r.randrange(500, 60_000)}
            if prev:
                body["previous_screen"] = prev
            prev = screen
            out.append(self.event("SCREEN_VIEWED", t, t + self.lag(), dev, body, ch))
        if r.random() < 0.45:
            t += r.randrange(1_000, 30_000)
            out.append(self.custom_event(ch, dev, t, session, open_body.get("triggering_push")))
        if r.random() < 0.15 and ch.device and ch.device["attributes"]["location_enabled"] == "true":
            t += 1_000
            out.append(self.event("LOCATION", t, t + self.lag(), dev, {
                "latitude": f"{r.uniform(-60, 60):.6f}", "longitude": f"{r.uniform(-150, 150):.6f}",
                "foreground": True, "session_id": session}, ch))
        if r.random() < 0.05:
            t += 1_000
            region = self.uuid()
            dev_g = {**dev, "identifiers": {**dev["identifiers"],
                                            "com.urbanairship.gimbal.aii": self.uuid()}}
            out.append(self.event("REGION", t, t + self.lag(), dev_g, {
                "action": r.choice(("enter", "exit")), "region_id": region, "name": "Store 12",
                "source_info": {"source": "Gimbal", "region_id": region}, "session_id": session}, ch))
        if r.random() < 0.08:
            t += 500
            out.append(self.event("FEATURE_FLAG_INTERACTION", t, t + self.lag(), dev, {
                "flag_id": "8b0b3c3e-2c49-4e43-a4e3-1f2f1b2f8c11", "flag_name": "new_checkout",
                "eligible": r.random() < 0.7, "variant_id": r.choice(("a", "b"))}, ch))
        if r.random() < 0.12:
            out.extend(self._in_app_message(ch, dev, t, session))
        r_close = r.random()
        if r_close < 0.9:  # the rest never send CLOSE
            t += r.randrange(1_000, 120_000)
            # CLOSE is typically latent: sent when the app next becomes active.
            processed = t + (r.randrange(HOUR_MS, 30 * HOUR_MS) if r_close < 0.3 else self.lag())
            out.append(self.event("CLOSE", t, processed, dev, {"session_id": session}, ch))
        return out

    def custom_event(self, ch: Channel, dev: dict[str, Any], t: int, session: str | None,
                     triggering: dict[str, Any] | None) -> dict[str, Any]:
        r = self.rng
        name, has_value = r.choice(CUSTOM_EVENTS)
        body: dict[str, Any] = {"name": name, "source": "SDK"}
        if has_value:
            body["value"] = round(r.uniform(1, 250), 2)
            body["transaction"] = self.uuid()
        if session:
            body["session_id"] = session
        if triggering:
            body["triggering_push"] = triggering
        if r.random() < 0.6:
            body["properties"] = {"category": r.choice(("shoes", "books", "games")),
                                  "items": r.randrange(1, 5), "coupon": r.random() < 0.2}
        if r.random() < 0.1:
            body["interaction_type"] = "ua_button_tap"
            body["interaction_id"] = "home_banner"
        return self.event("CUSTOM", t, t + self.lag(), dev, body, ch)

    def _in_app_message(self, ch: Channel, dev: dict[str, Any], t: int, session: str
                        ) -> list[dict[str, Any]]:
        r = self.rng
        push = Push(self.uuid(), None, r.choice((None, 1, 2)), [r.choice(CATEGORIES)], t - DAY_MS)
        push.group_id = push.push_id
        base = {**self.push_fields(push), "session_id": session}
        if push.variant_id is not None:
            base["variant_id"] = push.variant_id
        roll = r.random()
        if roll < 0.08:
            return [self.event("IN_APP_MESSAGE_CONTROL", t, t + self.lag(), dev, {
                **base, "type": "CONTROL", "time_sent": iso_ms(push.sent_ms)}, ch)]
        if roll < 0.14:
            return [self.event("IN_APP_MESSAGE_EXCLUSION", t, t + self.lag(), dev, {
                **base, "type": "AUDIENCE_CHECK_EXCLUDED", "time_sent": iso_ms(push.sent_ms)}, ch)]
        if roll < 0.24:
            # Expirations are latent: reported on the next app start.
            body = {**base, "type": r.choice(("EXPIRED", "REPLACED", "ALREADY_DISPLAYED")),
                    "time_sent": iso_ms(push.sent_ms), "time_expired": iso_ms(t)}
            if body["type"] == "REPLACED":
                body["replacing_push"] = {"push_id": self.uuid()}
            return [self.event("IN_APP_MESSAGE_EXPIRATION", t, t + r.randrange(HOUR_MS, 20 * HOUR_MS),
                               dev, body, ch)]
        out = [self.event("IN_APP_MESSAGE_DISPLAY", t, t + self.lag(), dev, dict(base), ch)]
        t += r.randrange(1_000, 20_000)
        kind = r.choice(("BUTTON_CLICK", "MESSAGE_CLICK", "TIMED_OUT", "USER_DISMISSED"))
        body = {**base, "type": kind, "duration": r.randrange(800, 15_000),
                "time_sent": iso_ms(push.sent_ms)}
        if kind == "BUTTON_CLICK":
            body.update(button_id="shop_now", button_description="Shop now", button_group="ua_shop")
        out.append(self.event("IN_APP_MESSAGE_RESOLUTION", t, t + self.lag(), dev, body, ch))
        return out

    def _in_app_scene(self, now: int) -> list[dict[str, Any]]:
        r = self.rng
        ch = self.pick(*APP_PLATFORMS)
        dev = self.app_device(ch)
        t = now - r.randrange(0, 30_000)
        session = self.uuid()
        push = Push(self.uuid(), None, None, [], t - DAY_MS)
        push.group_id = push.push_id
        base = {**self.push_fields(push), "session_id": session, "time_sent": iso_ms(push.sent_ms)}
        pager = self.uuid()
        pages = [self.uuid() for _ in range(r.randrange(2, 5))]
        ctx = {"reporting_context": {"content_types": ["scene"]},
               "state": {"pager": {"identifier": pager, "page_identifier": pages[0],
                                   "page_index": 0, "page_count": len(pages), "completed": False}}}
        out = [self.event("IN_APP_EXPERIENCES", t, t + self.lag(), dev,
                          {**base, "event_name": "scene_displayed"}, ch)]
        viewed = []
        for i, page in enumerate(pages):
            t += r.randrange(1_000, 8_000)
            out.append(self.event("IN_APP_PAGE_VIEW", t, t + self.lag(), dev, {
                **base, "context": ctx, "pager_identifier": pager, "page_identifier": page,
                "page_index": i, "page_count": len(pages), "viewed_count": 1,
                "completed": i == len(pages) - 1, "locale": "en-US"}, ch))
            viewed.append({"page_identifier": page, "page_index": i,
                           "display_time_ms": r.randrange(500, 8_000)})
            if i + 1 < len(pages):
                out.append(self.event("IN_APP_PAGE_SWIPE", t + 200, t + 200 + self.lag(), dev, {
                    **base, "pager_identifier": pager, "from_page_index": i,
                    "from_pager_identifier": page, "to_page_index": i + 1,
                    "to_page_identifier": pages[i + 1], "locale": "en-US"}, ch))
        completed = r.random() < 0.6
        if completed:
            out.append(self.event("IN_APP_PAGER_COMPLETED", t, t + self.lag(), dev, {
                **base, "pager_identifier": pager, "page_identifier": pages[-1],
                "page_index": len(pages) - 1, "page_count": len(pages)}, ch))
        out.append(self.event("IN_APP_PAGER_SUMMARY", t + 100, t + 100 + self.lag(), dev, {
            **base, "pager_identifier": pager, "page_count": len(pages), "completed": completed,
            # The schema declares one object here (Airship's examples show an array).
            "viewed_pages": viewed[-1]}, ch))
        out.append(self.event("IN_APP_BUTTON_TAP", t + 300, t + 300 + self.lag(), dev, {
            **base, "button_id": "dismiss" if not completed else "done", "context": ctx,
            "locale": "en-US"}, ch))
        if r.random() < 0.5:
            form = self.uuid()
            question = self.uuid()
            fctx = {"reporting_context": {"content_types": ["survey"]},
                    "state": {"form": {"form_identifier": form, "submitted": False, "type": "nps",
                                       "response_type": "nps"}}}
            out.append(self.event("IN_APP_FORM_DISPLAY", t + 500, t + 500 + self.lag(), dev, {
                **base, "type": "DISPLAY", "forms": {"form_id": form}, "context": fctx}, ch))
            out.append(self.event("IN_APP_EXPERIENCES", t + 500, t + 500 + self.lag(), dev, {
                **base, "event_name": "survey_displayed", "survey_type": "nps"}, ch))
            if r.random() < 0.7:
                score = r.randrange(0, 11)
                cat = "PROMOTER" if score >= 9 else "PASSIVE" if score >= 7 else "DETRACTOR"
                out.append(self.event("IN_APP_FORM_RESULT", t + 4_000, t + 4_000 + self.lag(), dev, {
                    **base, "type": "RESULT", "context": fctx,
                    "forms": {"form_id": form, "type": "nps", "response_type": "nps",
                              "nps": {"audience_category": cat, "question_id": question,
                                      "score": score}}}, ch))
                out.append(self.event("IN_APP_EXPERIENCES", t + 4_000, t + 4_000 + self.lag(), dev, {
                    **base, "event_name": "survey_submitted", "survey_type": "nps"}, ch))
        out.append(self.event("IN_APP_EXPERIENCES", t + 600, t + 600 + self.lag(), dev, {
            **base, "event_name": "scene_completed" if completed else "scene_incomplete"}, ch))
        if r.random() < 0.3:
            out.append(self.event("LABEL_EVENT", t, t + self.lag(), None, {
                "push_id": push.push_id, "group_id": push.group_id,
                "labels": [{"id": p, "label": f"page {i + 1}"} for i, p in enumerate(pages)]}))
        return out

    def _web_session(self, now: int) -> list[dict[str, Any]]:
        r = self.rng
        ch = self.pick("WEB")
        dev = self.web_device(ch)
        t = now - r.randrange(0, 60_000)
        out: list[dict[str, Any]] = []
        if not ch.first_opened:
            ch.first_opened = True
            out.append(self.event("FIRST_OPEN", t, t + self.lag(), dev, None, ch))
        session = self.uuid()
        body: dict[str, Any] = {"session_id": session}
        push = self._recent_push(now)
        if push and r.random() < 0.3:
            t += 100
            out.append(self.event("WEB_CLICK", t, t + self.lag(), self.web_device(ch, locale=False),
                                  self.associated(push), ch))
            body["triggering_push"] = self.associated(push)
        out.append(self.event("WEB_SESSION", t, t + self.lag(), dev, body, ch))
        for _ in range(r.randrange(1, 4)):
            t += r.randrange(3_000, 60_000)
            out.append(self.event("SCREEN_VIEWED", t, t + self.lag(), dev, {
                "session_id": session, "viewed_screen": r.choice(SCREENS),
                "duration": r.randrange(500, 30_000)}, ch))
        if r.random() < 0.3:
            out.append(self.custom_event(ch, dev, t + 500, session, None))
        return out

    def _push_campaign(self, now: int) -> list[dict[str, Any]]:
        r = self.rng
        t = now - r.randrange(0, 10_000)
        resource = r.choices(("PUSH", "PIPELINES", "SCHEDULES", "EXPERIMENTS"), (6, 2, 1, 1))[0]
        push = Push(self.uuid(), self.uuid() if resource == "PIPELINES" else None,
                    r.randrange(1, 3) if resource == "EXPERIMENTS" else None,
                    r.sample(CATEGORIES, r.randrange(0, 3)), t)
        alert = r.choice(ALERTS)
        platforms = r.sample(("ios", "android", "amazon", "web", "email", "sms", "open"),
                             r.randrange(1, 5))
        spec: dict[str, Any] = {"audience": "all", "device_types": platforms,
                "notification": {"alert": alert}}
        if "email" in platforms:
            spec["notification"]["email"] = {"subject": alert, "sender_name": "Example Shop"}
        payload = base64.b64encode(orjson.dumps(spec)).decode()
        pb_body: dict[str, Any] = {"payload": payload, "resource": resource, "trimmed": False,
                                   **self.push_fields(push)}
        out = [self.event("PUSH_BODY", t, t + r.randrange(100, 2_000), None, pb_body)]
        if r.random() < 0.05:
            return out  # quirk: a push that reached no one
        self.recent_pushes.append(push)
        del self.recent_pushes[:-50]
        wanted = {p.upper() for p in platforms}
        experiment = self.uuid() if push.variant_id is not None else None
        for _ in range(r.randrange(3, 25)):
            ch = self.pick(*wanted)
            st = t + r.randrange(0, 60_000)
            dev = self.any_device(ch)
            roll = r.random()
            if ch.platform in APP_PLATFORMS and roll < 0.05:
                out.append(self.event("SEND_REJECTED", st, st + self.lag(), self.app_device(ch, named=False), {
                    **self.push_fields(push), "status": r.choice(("BadDeviceToken", "Uninstalled", "Unavailable"))}))
                continue
            if ch.platform in APP_PLATFORMS and roll < 0.08:
                out.append(self.event("SEND_ABORTED", st, st + self.lag(), self.app_device(ch, named=False), {
                    **self.push_fields(push),
                    "reason": r.choice(("FREQUENCY_LIMIT_REACHED", "FEED_REQUEST_REJECTED", "UNKNOWN"))}))
                continue
            if experiment and ch.platform in ("IOS", "ANDROID", "AMAZON", "WEB") and roll < 0.2:
                out.append(self.event("CONTROL", st, st + self.lag(),
                                      dev if ch.platform != "WEB" else self.web_device(ch), {
                    **self.push_fields(push), "experiment_id": experiment}, ch,
                    experiment_id=experiment))
                continue
            send_body: dict[str, Any] = {**self.push_fields(push), "alerting": True}
            if push.variant_id is not None:
                send_body["variant_id"] = push.variant_id
            if ch.platform == "EMAIL":
                send_body.update(click_tracking=True, open_tracking=True)
            top = {}
            if experiment:
                top["experiments"] = {"experiment_id": experiment, "type": "EXP_GROUP",
                                      "variant_id": str(push.variant_id)}
            out.append(self.event("SEND", st, st + self.lag(), dev, send_body, ch, **top))
            ch.last_push = (push.push_id, push.group_id, st)
            if ch.platform == "IOS" and r.random() < 0.03:
                # quirk: APNs reports the uninstall only when a send fails to reach the device.
                out.append(self.event("UNINSTALL", st + 1_000, st + 1_000 + self.lag(), dev,
                                      {"decay": False}, ch))
                self._replace(ch)
                continue
            if ch.platform in APP_PLATFORMS and r.random() < 0.12:
                ot = st + r.randrange(5_000, 2 * HOUR_MS)
                out.append(self.event("OPEN", ot, ot + self.lag(), dev, {
                    "session_id": self.uuid(), "triggering_push": self.associated(push),
                    "last_delivered": self.associated(push)}, ch))
                if r.random() < 0.4:
                    out.append(self.custom_event(ch, dev, ot + 20_000, None, self.associated(push)))
            elif ch.platform == "EMAIL":
                out.extend(self._email_engagement(ch, push, st))
            elif ch.platform == "SMS" and r.random() < 0.2:
                ct = st + r.randrange(10_000, HOUR_MS)
                out.append(self.event("SHORT_LINK_CLICK", ct, ct + self.lag(), {
                    **self.sms_device(ch), "attributes": {"web_user_agent_string": "Mozilla/5.0"}}, {
                    **self.push_fields(push), "properties": {"original_url": "https://example.com/sale"}}))
        return out

    def _email_engagement(self, ch: Channel, push: Push, st: int) -> list[dict[str, Any]]:
        r = self.rng
        props = {"email": ch.address, "sender": "news@example.com", "subject": "News"}
        dev = {"delivery_address": ch.address, "device_type": "EMAIL"}
        trig = self.associated(push)
        out = [self.event("CUSTOM", st + 2_000, st + 2_000 + self.lag(), dev, {
            "name": "delivery", "source": "API", "properties": props, "triggering_push": trig})]
        roll = r.random()
        if roll < 0.05:
            out.append(self.event("CUSTOM", st + 3_000, st + 3_000 + self.lag(), dev, {
                "name": "bounce", "source": "API", "triggering_push": trig,
                "properties": {**props, "bounce_class": "10", "bounce_event_type": "bounce"}}))
        elif roll < 0.4:
            ot = st + r.randrange(60_000, 6 * HOUR_MS)
            metrics = {"agent_family": "Gmail", "device_family": "Other", "is_mobile": False,
                       "is_prefetched": False, "os_family": "Windows", "os_version": "11"}
            out.append(self.event("CUSTOM", ot, ot + self.lag(), dev, {
                "name": "open", "source": "API", "triggering_push": trig,
                "properties": {**props, **metrics}}))
            if r.random() < 0.3:
                out.append(self.event("CUSTOM", ot + 5_000, ot + 5_000 + self.lag(), dev, {
                    "name": "click", "source": "API", "triggering_push": trig,
                    "properties": {**props, **metrics, "link_name": "shop",
                                   "link_url": "https://example.com/shop"}}))
            if r.random() < 0.05:
                out.append(self.event("CUSTOM", ot + 9_000, ot + 9_000 + self.lag(), dev, {
                    "name": "unsubscribe", "source": "API", "triggering_push": trig,
                    "properties": {"unsubscribe_event_type": "link_unsubscribe"}}))
        return out

    def _profile_change(self, now: int) -> list[dict[str, Any]]:
        r = self.rng
        ch = self.rng.choice(self.channels)
        t = now - r.randrange(0, 30_000)
        kind = r.random()
        if kind < 0.45:
            tag = r.choice(("vip", "sports", "news", "deals", "beta"))
            body: dict[str, Any] = {}
            if tag in ch.tags and r.random() < 0.5:
                ch.tags.remove(tag)
                body["remove"] = {"interests": [tag]}
            elif tag not in ch.tags:
                ch.tags.append(tag)
                body["add"] = {"interests": [tag]}
            body["current"] = {"interests": list(ch.tags)}
            dev = self.web_device(ch, attributes=False) if ch.platform == "WEB" else self.any_device(ch)
            return [self.event("TAG_CHANGE", t, t + self.lag(), dev, body, ch)]
        if kind < 0.8:
            body = {"set": [{"key": "loyalty_tier", "value": r.choice(("gold", "silver"))},
                            {"key": "lifetime_value", "value": round(r.uniform(0, 900), 2)}]}
            if r.random() < 0.2:
                body["remove"] = [{"key": "trial_end"}]
            return [self.event("ATTRIBUTE_OPERATION", t, t + self.lag(), self.any_device(ch), body, ch)]
        lists = ["weekly_digest", "product_updates"]
        enrolled = r.random() < 0.6
        body = {("enrolled" if enrolled else "canceled"): [lists[0]],
                "current": [lists[0]] if enrolled else []}
        if ch.platform in APP_PLATFORMS:
            dev = self.app_device(ch, named=False)
        elif ch.platform == "WEB":
            dev = {"channel": ch.channel, "device_type": "WEB"}
        elif ch.platform == "OPEN":
            dev = {"channel": ch.channel, "device_type": "OPEN", "open_platform_name": "smart_tv"}
        else:
            dev = {"channel": ch.channel, "device_type": ch.platform, "delivery_address": ch.address}
        return [self.event("SUBSCRIPTION_LIST", t, t + self.lag(), dev, body, ch)]

    def _email_consent(self, now: int) -> list[dict[str, Any]]:
        r = self.rng
        ch = self.pick("EMAIL")
        t = now - r.randrange(0, 30_000)
        dev = self.address_device(ch, named_key="named_user")
        ident = {"address": ch.address}
        out: list[dict[str, Any]] = []
        if not ch.opted_in:
            ch.opted_in = True
            out.append(self.event("COMPLIANCE", t, t + self.lag(), dev, {
                "event_type": "registration", "identifiers": ident,
                "properties": {"registration_type": "create", "commercial_opted_in": iso_ms(t),
                               "suppression_state": "none", "source": "ui"}}))
            out.append(self.event("FIRST_OPT_IN", t + 10, t + 10 + self.lag(),
                                  self.address_device(ch), None))
            out.append(self.event("SUBSCRIPTION", t + 20, t + 20 + self.lag(), dev, {
                "event_type": "registration", "identifiers": ident,
                "properties": {"commercial_opted_in": iso_ms(t),
                               "transactional_opted_in": iso_ms(t)}}, ch))
            return out
        roll = r.random()
        if roll < 0.4:
            ch.opted_in = False
            out.append(self.event("COMPLIANCE", t, t + self.lag(), dev, {
                "event_type": "registration", "identifiers": ident,
                # Without message_type: the schema's two unsubscribe shapes overlap otherwise.
                "properties": {"registration_type": "unsubscribe", "suppression_state": "none"}}))
            out.append(self.event("SUBSCRIPTION", t + 10, t + 10 + self.lag(), dev, {
                "event_type": r.choice(("link_unsubscribe", "list_unsubscribe")), "identifiers": ident,
                "properties": {"commercial_opted_out": iso_ms(t)}}, ch))
        elif roll < 0.6:
            out.append(self.event("COMPLIANCE", t, t + self.lag(), dev, {
                "event_type": "bounce", "identifiers": ident,
                "properties": {"bounce_class": 10, "bounce_event_type": "bounce",
                               "email": ch.address, "sender": "news@example.com",
                               "subject": "News"}}))
            out.append(self.event("SUBSCRIPTION", t + 10, t + 10 + self.lag(), dev, {
                "event_type": "bounce", "identifiers": ident}, ch))
        elif roll < 0.8:
            out.append(self.event("COMPLIANCE", t, t + self.lag(), dev, {
                "event_type": "create_and_send", "identifiers": ident,
                "properties": {"channel_registered": True, "commercial_opted_in": iso_ms(t)}}))
        else:
            out.append(self.event("SUBSCRIPTION", t, t + self.lag(), dev, {
                "event_type": "registration", "identifiers": ident,
                "subscription_lists": {"enrolled": ["weekly_digest"], "canceled": []}}, ch))
        return out

    def _sms_consent(self, now: int) -> list[dict[str, Any]]:
        r = self.rng
        ch = self.pick("SMS")
        t = now - r.randrange(0, 30_000)
        dev = self.sms_device(ch)
        ident = {"msisdn": ch.address, "sender": SENDERS[0]}
        out: list[dict[str, Any]] = []
        if not ch.opted_in:
            ch.opted_in = True
            kind = r.choice(("mobile_opt_in", "registration", "api_initiate_opt_in"))
            if kind == "mobile_opt_in":
                body = {"event_type": kind, "identifiers": ident,
                        "properties": {"keyword": "JOIN", "inbound_message": "JOIN",
                                       "outbound_message": "Thanks for joining!"}}
            elif kind == "registration":
                body = {"event_type": kind, "identifiers": ident,
                        "properties": {"registration_type": "create", "opted_in": iso_ms(t)}}
            else:
                body = {"event_type": kind, "identifiers": ident}
            out.append(self.event("COMPLIANCE", t, t + self.lag(), dev, body))
            out.append(self.event("FIRST_OPT_IN", t + 10, t + 10 + self.lag(),
                                  self.address_device(ch), None))
            return out
        roll = r.random()
        if roll < 0.45:
            ch.opted_in = False
            kw = r.choice(("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"))
            out.append(self.event("COMPLIANCE", t, t + self.lag(), dev, {
                "event_type": "mobile_opt_out", "identifiers": ident,
                "properties": {"keyword": kw, "inbound_message": kw,
                               "outbound_message": "You are unsubscribed."}}))
            out.append(self.event("COMPLIANCE", t + 5, t + 5 + self.lag(), dev, {
                "event_type": "opted_out", "identifiers": ident}))
        elif roll < 0.55:
            ch.opted_in = False
            out.append(self.event("COMPLIANCE", t, t + self.lag(), None, {
                "event_type": "carrier_deactivation", "identifiers": ident,
                "properties": {"action": r.choice(("uninstalled", "suppressed"))}}))
        elif roll < 0.65:
            out.append(self.event("COMPLIANCE", t, t + self.lag(), dev, {
                "event_type": "rnd_scan", "identifiers": ident,
                "properties": {"action": "none", "reassigned": False, "scan_id": self.uuid(),
                               "source": "monthly_scan"}}))
        elif roll < 0.8:
            out.append(self.event("COMPLIANCE", t, t + self.lag(), dev, {
                "event_type": "mobile_keyword_matched", "identifiers": ident,
                "properties": {"keyword": "HELP", "inbound_message": "HELP",
                               "outbound_message": "Reply STOP to stop."}}))
        else:
            out.append(self.event("COMPLIANCE", t, t + self.lag(), dev, {
                "event_type": "mobile_terminated_message", "identifiers": ident}))
        return out

    def _inbound_sms(self, now: int) -> list[dict[str, Any]]:
        ch = self.pick("SMS")
        t = now - self.rng.randrange(0, 30_000)
        return [self.event("MOBILE_ORIGINATED", t, t + self.lag(), self.sms_device(ch), {
            "event_type": "mobile_originated_sms",
            "identifiers": {"msisdn": ch.address, "sender": SENDERS[0]},
            "properties": {"inbound_message": "Where is my order?", "keyword": "ORDER",
                           "outbound_message": "Check the app for tracking."}})]

    def _message_center(self, now: int) -> list[dict[str, Any]]:
        r = self.rng
        ch = self.pick(*APP_PLATFORMS)
        dev = self.app_device(ch)
        t = now - r.randrange(0, 30_000)
        push = Push(self.uuid(), None, None, [r.choice(CATEGORIES)], t)
        fields = self.push_fields(push)
        if r.random() < 0.1:
            exp = self.uuid()
            return [self.event("RICH_CONTROL", t, t + self.lag(), dev, fields, ch, experiment_id=exp)]
        ctx = {"extra": {"offer": "WELCOME10"}}
        out = [self.event("RICH_DELIVERY", t, t + self.lag(), dev, {**fields, "context": ctx}, ch)]
        if r.random() < 0.5:
            t += r.randrange(60_000, 3 * HOUR_MS)
            out.append(self.event("RICH_READ", t, t + self.lag(), dev, {**fields, "context": ctx}, ch))
            if r.random() < 0.4:
                t += r.randrange(5_000, 600_000)
                out.append(self.event("RICH_DELETE", t, t + self.lag(), dev, {**fields, "context": ctx}, ch))
        return out

    def _uninstall(self, now: int) -> list[dict[str, Any]]:
        r = self.rng
        ch = self.pick(*APP_PLATFORMS, "WEB")
        t = now - r.randrange(0, 60_000)
        decay = r.random() < 0.4
        dev = self.web_device(ch) if ch.platform == "WEB" else self.app_device(ch)
        ev = self.event("UNINSTALL", t, t + self.lag(), dev, {"decay": decay}, ch)
        self._replace(ch)
        return [ev]

    def _open_channel(self, now: int) -> list[dict[str, Any]]:
        ch = self.pick("OPEN")
        t = now - self.rng.randrange(0, 30_000)
        if not ch.opted_in:
            ch.opted_in = True
            return [self.event("FIRST_OPT_IN", t, t + self.lag(), self.open_device(ch), None)]
        return [self.event("TAG_CHANGE", t, t + self.lag(), self.open_device(ch), {
            "add": {"device": ["tv"]}, "current": {"device": ["tv"]}}, ch)]

    def _contact_change(self, now: int) -> list[dict[str, Any]]:
        r = self.rng
        ch = self.pick(*APP_PLATFORMS)
        t = now - r.randrange(0, 30_000)
        kind = r.choice(("ASSOCIATION", "DISSOCIATION"))
        if kind == "ASSOCIATION" and not ch.named_user_id:
            ch.named_user_id = f"user-{r.randrange(10**6):06d}"
        body = {"change_type": kind, "contact_id": ch.contact_id, "channel_id": ch.channel}
        if ch.named_user_id:
            body["named_user_id"] = ch.named_user_id
        return [self.event("CONTACT_CHANGE", t, t + self.lag(), self.app_device(ch), body, ch)]
