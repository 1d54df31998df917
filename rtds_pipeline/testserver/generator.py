"""Lifecycle generator: a population of channels living plausible lives, deterministic per seed.

`LifecycleGenerator.story(now_ms)` returns the events of one small story (an app session, a push
campaign and what its recipients did, a new subscriber signing up, …) as envelope dicts without
`offset`, their times as epoch ms: `occurred` on the story's clock, `processed` when the event
reaches Airship. The stream log holds each event back until its `processed` time comes and
applies the stream's quirks (duplicates, late batches, skewed device clocks, unknown types and
fields, `log.Quirks`).

Per-send and per-session rates follow published benchmarks (below), so the demo's marts show
numbers a marketer would recognise. Installs, uninstalls and sign-ups run on the story clock
(so many a day, whatever the event volume): a day's uninstalls stay a small share of the
day's active channels at 10 events/s as at 1,000.
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
MINUTE_MS = 60_000

# ---------------------------------------------------------------------------- published rates
# Sources (the demo app is a shop, so retail / e-commerce figures where a source has them):
# [AS]  Airship, "A Marketer's Guide to Push Notification Benchmarks" (Mobile App Push
#       Notification Benchmarks for 2025), https://airship.com/?p=44942 ; Airship, "Direct Open
#       and Push Influence numbers", https://support.urbanairship.com/hc/en-us/articles/213493063
#       (influence is counted for 12 hours after a send).
# [CB]  "Push notification industry benchmarks" (Airship/MoEngage figures by vertical),
#       https://contentbase.com/blog/push-notification-industry-benchmarks — retail median direct
#       open rate 3.0 % Android, 2.5 % iOS.
# [LP]  Leanplum via Business of Apps, "Push notifications on Android have twice the open rate of
#       those on iOS", http://www.businessofapps.com/push-notifications-android-twice-open-rate-ios/
#       — direct opens iOS 1.77 %, Android 3.48 %; median time to open iOS 7 min, Android 48 min.
# [BZ]  Appboy (Braze), "Digits Vol. 1: Mobile Marketing Benchmarks",
#       https://www.braze.com/resources/articles/digits-vol-1-mobile-marketing-benchmarks, summed up
#       in http://www.adcolony.com/blog/2016/10/25/influencing-app-opens-via-notifications/ — direct
#       opens iOS 2.0 %, Android 6.1 %; on iOS a further 7.1 % of recipients open the app later
#       (78 % of opens influenced), on Android 43.5 % of opens are influenced.
# [BA]  Batch, "Push Notifications Benchmark 2025",
#       https://batch.com/blog/case-studies/benchmark-notifications-push-crm-mobile — push opt-in
#       Android 67 %, iOS 56 %.
# [WP]  "Measuring Push Notification Click-Through Rate", https://www.web-push-notifications.com/
#       notification-engagement-campaign-optimization/ab-testing-push-notifications/
#       measuring-push-notification-click-through-rate/ — unsegmented web push broadcasts 1–4 %.
# [MC]  Mailchimp, "Email Marketing Benchmarks" (Oct 2019),
#       https://mailchimp.com/resources/email-marketing-benchmarks/ — all accounts: open 22.71 %,
#       click 2.91 %, hard bounce 0.40 %, soft bounce 0.61 %, unsubscribe 0.25 %; e-commerce:
#       open 15.68 %, click 2.01 %.
# [KV]  Klaviyo, "Campaign SMS and MMS benchmarks",
#       https://help.klaviyo.com/hc/en-us/articles/360051110111 — click rate "good" 8.9–14.5 %,
#       conversion "good" 1.0–2.0 %, unsubscribe "good" 0.5–1.2 %.
# [SL]  Lumin, "Session Length", https://www.uselumin.co/playbook/sessionlength — shopping apps
#       average 3–5 minutes a session.
# [CN]  ConvertNative, "Mobile conversion rate in e-commerce: key figures for 2026",
#       https://convertnative.com/en/taux-conversion-mobile-ecommerce — native apps convert 3.5–7 %
#       of sessions.
# [AF]  AppsFlyer, "App Uninstall Report", https://paperzz.com/doc/9033800/app-uninstall-report---
#       facebook-marketing-partners — within 30 days of install 21 % of Android and 9 % of iOS
#       shopping-app installs are uninstalled, Android twice iOS; 28 % across apps
#       (https://blog.taptica.com/report-30-day-app-uninstall-rate/).
PUSH_OPT_IN = {"IOS": 9 / 16, "ANDROID": 11 / 16, "AMAZON": 11 / 16}  # [BA] 56 %, 67 %
DIRECT_OPEN = {"IOS": 0.025, "ANDROID": 0.045, "AMAZON": 0.035}  # per app send [CB] [LP] [BZ]
# Opens that a push prompted but that did not come through it, within its 12 hours [AS] [BZ].
INFLUENCED_OPEN = {"IOS": 0.07, "ANDROID": 0.04, "AMAZON": 0.04}
TIME_TO_OPEN_MS = {"IOS": 7 * MINUTE_MS, "ANDROID": 48 * MINUTE_MS, "AMAZON": 48 * MINUTE_MS}  # [LP]
WEB_CLICK = 0.03  # per web send [WP]
EMAIL_HARD_BOUNCE, EMAIL_SOFT_BOUNCE = 0.004, 0.006  # per send [MC]
EMAIL_OPEN = 0.19  # per delivery, between e-commerce and all accounts [MC]
EMAIL_CLICK_OF_OPEN = 0.13  # 2.5 % of deliveries [MC]
EMAIL_UNSUBSCRIBE = 0.0025  # per delivery [MC]
SMS_UNDELIVERED = 0.03  # carrier failures; no benchmark found, delivery reports say "most"
SMS_CLICK = 0.11  # per delivered SMS [KV]
SMS_STOP = 0.009  # per delivered SMS [KV]
SESSION_MEDIAN_MS = 3 * MINUTE_MS  # median; the mean comes out ~4.5 min [SL]
SESSION_CAP_MS = 60 * MINUTE_MS  # sessions past an hour are the SDK's background timer, not use
LOST_CLOSE = 0.02  # the app was killed or crashed before it could report the CLOSE
LATENT_CLOSE = 0.25  # the CLOSE waits for the next app start (background upload failed)
# Per channel per day. An installed base churns slower than the 9–21 % of new installs lost in
# their first 30 days [AF]: ~3 % (iOS) and ~6 % (Android) a month, Android twice iOS.
UNINSTALL_PER_DAY = {"IOS": 0.001, "ANDROID": 0.002, "AMAZON": 0.002, "WEB": 0.0015}
# A growing list (~15–20 % a month): enough sign-ups that a day has new email, SMS and open channels.
SIGNUP_PER_DAY = {"EMAIL": 0.006, "SMS": 0.006, "OPEN": 0.005}
UNINSTALL_DECAY_MS = 3 * DAY_MS  # an uninstalled app nobody sends to is found by inactivity
# The SDK queues events and uploads them when the app goes to the background, and every few
# minutes while it is in use: a session's events mostly reach Airship (and the stream) together.
UPLOAD_EVERY_MS = 5 * MINUTE_MS
SEGMENT = (0.005, 0.04)  # a campaign's audience: this share of its platforms' channels
ENGAGEMENT_SIGMA = 1.2  # log-normal spread of how often people use the app

PLATFORM_WEIGHTS = {
    "IOS": 34, "ANDROID": 34, "AMAZON": 3, "WEB": 12, "EMAIL": 9, "SMS": 6, "OPEN": 2,
}
APP_PLATFORMS = ("IOS", "ANDROID", "AMAZON")
# `occurred` of these comes from the device's clock (and inherits its skew); Airship stamps the
# others itself (sends, their fates, uninstalls, contact changes, compliance, email and SMS).
DEVICE_CLOCKS = frozenset((*APP_PLATFORMS, "WEB"))
SERVER_STAMPED = frozenset(("SEND", "SEND_REJECTED", "SEND_ABORTED", "CONTROL", "UNINSTALL",
                            "CONTACT_CHANGE"))
COUNTRIES = (("US", "en", "America/New_York", "-18000"), ("GB", "en", "Europe/London", "0"),
             ("DE", "de", "Europe/Berlin", "3600"), ("FR", "fr", "Europe/Paris", "3600"),
             ("BR", "pt", "America/Sao_Paulo", "-10800"), ("JP", "ja", "Asia/Tokyo", "32400"),
             ("US", "es", "America/Los_Angeles", "-28800"))
APP_VERSIONS = ("5.2.0", "5.3.1", "5.4.0", "6.0.0")
SCREENS = ("home", "search", "product", "cart", "checkout", "settings", "inbox", "profile")
# (name, has a value, weight): 45 % of sessions record one, a tenth of those a purchase: ~4.5 %
# of sessions buy [CN].
CUSTOM_EVENTS = (("purchase", True, 1.0), ("add_to_cart", True, 2.0),
                 ("viewed_product", False, 4.5), ("signup", False, 0.5), ("share", False, 1.0),
                 ("level_complete", False, 1.0))
CUSTOM_WEIGHTS = [w for _, _, w in CUSTOM_EVENTS]
CATEGORIES = ("promo", "onboarding", "retention", "transactional", "news")
ALERTS = ("Your order has shipped", "20% off today only", "We miss you!", "New arrivals are here",
          "Complete your profile", "Flash sale starts now")
BROWSERS = (("chrome", "chrome-131", "desktop"), ("safari", "safari-18", "mobile"),
            ("firefox", "firefox-133", "desktop"))
SENDERS = ("12345", "+15005550006")
EMAIL_SENDER = "news@example.com"


@dataclasses.dataclass(eq=False)
class Channel:
    channel: str
    platform: str
    named_user_id: str | None
    contact_id: str
    country: tuple[str, str, str, str]
    app_version: str
    address: str | None = None
    first_opened: bool = True  # installed before the story began (new installs start False)
    opted_in: bool = True  # email/SMS/open: subscribed before the story began
    last_push: tuple[Push, int] | None = None  # last push delivered, when (ms)
    installed_at: int = 0  # installed or subscribed then (ms); 0: before the story began
    # How often the person uses the app, relative to others: a few heavy users have most of the
    # sessions, as in real apps, so a push's recipients are mostly people who rarely open it.
    engagement: float = 1.0
    gone_at: int | None = None  # the app was deleted then; Airship learns it on a later send
    retired: bool = False  # left the population (uninstalled, unsubscribed, bounced)
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

    def __init__(self, seed: int = 0, population: int = 8000) -> None:
        self.rng = random.Random(seed)
        self.population = population
        self.channels: list[Channel] = [self._new_channel() for _ in range(population)]
        self.by_platform: dict[str, list[Channel]] = {}
        for ch in self.channels:
            self.by_platform.setdefault(ch.platform, []).append(ch)
        self._pools: dict[tuple[str, ...], list[Channel]] = {}
        self._retired = 0  # retired channels still in the lists
        self._cum_engagement: dict[tuple[str, ...], list[float]] = {}
        self._gone: list[Channel] = []  # uninstalled, not yet known to Airship; oldest first
        self._owed_signups: list[str] = []  # platforms whose lost subscribers new ones replace
        self._stories: list[tuple[Callable[[int], list[dict[str, Any]]], float]] = [
            (self._app_session, 40), (self._web_session, 8), (self._push_campaign, 5),
            (self._profile_change, 8), (self._email_preferences, 0.2), (self._inbound_sms, 2),
            (self._message_center, 4), (self._in_app_scene, 6), (self._open_channel, 2),
            (self._contact_change, 2),
        ]
        self._story_fns = [fn for fn, _ in self._stories]
        self._story_weights = [w for _, w in self._stories]
        # What a device batches and uploads together: these stories can arrive late as a whole.
        self._device_batches = {self._app_session, self._web_session, self._message_center}
        self._lifecycle_kinds, self._lifecycle_weights = self._lifecycle_rates()
        self._lifecycle_per_ms = sum(self._lifecycle_weights) / DAY_MS
        self._next_lifecycle: int | None = None
        # Stories that begin later (a person opens the app hours after a push): the stream log
        # takes them (`take_later`) and asks for their events when their time comes, so the
        # events of tomorrow's opens are not held in memory today.
        self._later: list[tuple[int, Callable[..., list[dict[str, Any]]], tuple[Any, ...]]] = []

    # ---------------------------------------------------------------- identity helpers
    def uuid(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"

    def _new_channel(self, platform: str | None = None) -> Channel:
        r = self.rng
        platform = platform or r.choices(list(PLATFORM_WEIGHTS), list(PLATFORM_WEIGHTS.values()))[0]
        named = f"user-{r.randrange(10**6):06d}" if r.random() < 0.5 else None
        ch = Channel(self.uuid(), platform, named, self.uuid(), r.choice(COUNTRIES),
                     r.choice(APP_VERSIONS), engagement=r.lognormvariate(0.0, ENGAGEMENT_SIGMA))
        if platform == "EMAIL":
            ch.address = f"{named or 'anon'}.{ch.channel[:6]}@example.com"  # one channel an address
        elif platform == "SMS":
            ch.address = f"1555{r.randrange(10**7):07d}"
        return ch

    def pick(self, *platforms: str, at: int | None = None) -> Channel:
        """Any channel of one of `platforms` that uses its app (and existed at `at`)."""
        return self._pick(platforms, at, weighted=False)

    def pick_user(self, *platforms: str, at: int | None = None) -> Channel:
        """The channel of someone using the app at `at`: the more engaged, the likelier."""
        return self._pick(platforms, at, weighted=True)

    def _pick(self, platforms: tuple[str, ...], at: int | None, *, weighted: bool) -> Channel:
        pool = self._pool(platforms)
        for _ in range(8):
            if weighted:
                ch = self.rng.choices(pool, cum_weights=self._engagement(platforms, pool))[0]
            else:
                ch = self.rng.choice(pool)
            if not ch.retired and ch.gone_at is None and (at is None or ch.installed_at <= at):
                return ch
        return self._install_channel(platforms[0], 0)

    def _pool(self, platforms: tuple[str, ...]) -> list[Channel]:
        """Every channel of `platforms`, the uninstalled ones Airship does not know of yet too
        (and, until the next compaction, retired ones: callers skip them)."""
        pool = self._pools.get(platforms)
        if pool is None:
            pool = self._pools[platforms] = [c for p in platforms for c in self.by_platform.get(p, ())]
        if not pool:
            pool = [self._install_channel(platforms[0], 0)]
        return pool

    def _engagement(self, platforms: tuple[str, ...], pool: list[Channel]) -> list[float]:
        cum = self._cum_engagement.get(platforms)
        if cum is None or len(cum) != len(pool):
            total, cum = 0.0, []
            for ch in pool:
                total += ch.engagement
                cum.append(total)
            self._cum_engagement[platforms] = cum
        return cum

    def _install_channel(self, platform: str, at: int) -> Channel:
        ch = self._new_channel(platform)
        ch.first_opened = ch.opted_in = False
        ch.installed_at = at
        self.channels.append(ch)
        self.by_platform.setdefault(platform, []).append(ch)
        for platforms, pool in self._pools.items():  # kept up to date: rebuilding costs O(n)
            if platform in platforms:
                pool.append(ch)
                cum = self._cum_engagement.get(platforms)
                if cum is not None and len(cum) + 1 == len(pool):
                    cum.append((cum[-1] if cum else 0.0) + ch.engagement)
        return ch

    def _retire(self, ch: Channel) -> None:
        """The channel leaves the population: uninstalled, unsubscribed or bounced for good. It
        stays in the lists (marked) until retired ones are a twentieth of them."""
        if ch.retired:
            return
        ch.retired = True
        self._retired += 1
        if self._retired * 20 > len(self.channels):
            self.channels = [c for c in self.channels if not c.retired]
            self.by_platform = {p: [c for c in chs if not c.retired]
                                for p, chs in self.by_platform.items()}
            self._pools.clear()
            self._cum_engagement.clear()
            self._retired = 0

    @staticmethod
    def push_opted_in(ch: Channel) -> bool:
        return int(ch.channel[1], 16) < PUSH_OPT_IN[ch.platform] * 16

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
                    "push_opt_in": "true" if self.push_opted_in(ch) else "false",
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

    def server_lag(self) -> int:
        """Airship's own events (a send, its fate) reach the stream within a second or two."""
        return self.rng.randrange(20, 2_000)

    def delay(self, median_ms: int, cap_ms: int, sigma: float = 1.2) -> int:
        """How long until a person reacts: log-normal around `median_ms`, at most `cap_ms`."""
        return max(1_000, min(cap_ms, int(median_ms * self.rng.lognormvariate(0.0, sigma))))

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

    def _last_delivered(self, ch: Channel, t: int) -> dict[str, Any] | None:
        # Airship keeps last_delivered for 12 h; a push sent after `t` cannot be it.
        if ch.last_push and 0 <= t - ch.last_push[1] < 12 * HOUR_MS:
            return self.associated(ch.last_push[0])
        return None

    def _session_body(self, session: str, ch: Channel, t: int,
                      push: Push | None) -> dict[str, Any]:
        """The body of a session's first event (OPEN, WEB_SESSION): the push it came from, and
        the last push delivered to the channel."""
        body: dict[str, Any] = {"session_id": session}
        delivered = self._last_delivered(ch, t)
        if delivered:
            body["last_delivered"] = delivered
        if push:
            body["triggering_push"] = self.associated(push)
        return body

    # ---------------------------------------------------------------- stories
    def later(self, at_ms: int, story: Callable[..., list[dict[str, Any]]], *args: Any) -> None:
        self._later.append((at_ms, story, args))

    def take_later(self) -> list[tuple[int, Callable[..., list[dict[str, Any]]], tuple[Any, ...]]]:
        """The stories deferred since the last call: (when, story, its arguments)."""
        out, self._later = self._later, []
        return out

    def story(self, now_ms: int, late_ms: int = 0) -> list[dict[str, Any]]:
        """One story at `now_ms`. With `late_ms`, a device story happens that much earlier and
        its whole batch reaches Airship now (other stories ignore it: servers are not late)."""
        if self._next_lifecycle is None:
            self._next_lifecycle = now_ms + self._lifecycle_gap()
            self._uninstalled_before(now_ms)
        if now_ms >= self._next_lifecycle:
            # A long pause (a server restarted from an old cache) brings one day's worth, no more.
            self._next_lifecycle = max(self._next_lifecycle, now_ms - DAY_MS) + self._lifecycle_gap()
            return self._lifecycle(now_ms)
        if self._owed_signups and self.rng.random() < 0.2:
            return self._signup(self._owed_signups.pop(0), now_ms)
        fn = self.rng.choices(self._story_fns, self._story_weights)[0]
        if late_ms and fn in self._device_batches:
            deferred = len(self._later)
            out = fn(now_ms - late_ms)
            for ev in out:
                ev["processed"] += late_ms
            # What the batch left for later (a latent CLOSE) comes late by as much.
            self._later[deferred:] = [(at + late_ms, story, args)
                                      for at, story, args in self._later[deferred:]]
            return out
        return fn(now_ms)

    def _uninstalled_before(self, now: int) -> None:
        """The story starts in the middle of things: apps deleted in the last days that Airship
        has not noticed yet (the next send, or decay, will tell). About two days' worth: those
        who still get pushes are found within a day, the others after UNINSTALL_DECAY_MS."""
        for (kind, platform), per_day in zip(self._lifecycle_kinds, self._lifecycle_weights,
                                             strict=True):
            if kind != "uninstall":
                continue
            for ch in self.rng.sample(self.by_platform[platform],
                                      min(len(self.by_platform[platform]),
                                          int(per_day * 2))):
                ch.gone_at = now - self.rng.randrange(UNINSTALL_DECAY_MS)
                self._gone.append(ch)
        self._gone.sort(key=lambda ch: ch.gone_at or 0)

    def _lifecycle_gap(self) -> int:
        return 1 + int(self.rng.expovariate(self._lifecycle_per_ms))

    def _lifecycle_rates(self) -> tuple[list[tuple[str, str]], list[float]]:
        """Installs, uninstalls and sign-ups a day, from the starting population (so the rates
        do not drift as it changes)."""
        kinds, weights = [], []
        for platform in (*APP_PLATFORMS, "WEB"):
            n = len(self.by_platform.get(platform, ()))
            for kind in ("uninstall", "install"):  # as many come as go: the base stays its size
                kinds.append((kind, platform))
                weights.append(n * UNINSTALL_PER_DAY[platform])
        for platform, rate in SIGNUP_PER_DAY.items():
            kinds.append(("signup", platform))
            weights.append(len(self.by_platform.get(platform, ())) * rate)
        # The monthly reassigned-numbers scan reports on a few numbers a day.
        kinds.append(("rnd_scan", "SMS"))
        weights.append(len(self.by_platform.get("SMS", ())) * 0.002)
        return kinds, weights

    def _lifecycle(self, now: int) -> list[dict[str, Any]]:
        out = self._decay_uninstalls(now)
        kind, platform = self.rng.choices(self._lifecycle_kinds, self._lifecycle_weights)[0]
        if kind == "uninstall":
            # Nothing to see yet: the app is gone, the next send tells Airship (or decay does).
            ch = self.pick(platform)
            ch.gone_at = now
            self._gone.append(ch)
        elif kind == "install":
            t = now - self.rng.randrange(0, 60_000)
            ch = self._install_channel(platform, t)
            out += self._session(ch, t) if platform in APP_PLATFORMS else self._web_visit(ch, t)
        elif kind == "signup":
            out += self._signup(platform, now)
        else:
            out += self._rnd_scan(now)
        return out

    def _decay_uninstalls(self, now: int) -> list[dict[str, Any]]:
        out = []
        while self._gone and now - (self._gone[0].gone_at or now) > UNINSTALL_DECAY_MS:
            ch = self._gone.pop(0)
            if not ch.retired:
                dev = self.web_device(ch) if ch.platform == "WEB" else self.app_device(ch)
                out.append(self.event("UNINSTALL", now, now + self.lag(), dev, {"decay": True}, ch))
                self._retire(ch)
        return out

    def _uninstall_found_by_send(self, ch: Channel, dev: dict[str, Any], st: int) -> dict[str, Any]:
        # APNs / FCM / the browser's push service answer the send: the token is gone.
        self._retire(ch)
        if ch in self._gone:
            self._gone.remove(ch)
        t = st + self.rng.randrange(200, 5_000)
        return self.event("UNINSTALL", t, t + self.server_lag(), dev, {"decay": False}, ch)

    # ------------------------------------------------------------------ app and web sessions
    def _app_session(self, now: int) -> list[dict[str, Any]]:
        t = now - self.rng.randrange(0, 60_000)
        return self._session(self.pick_user(*APP_PLATFORMS, at=t), t)

    def _session(self, ch: Channel, t: int, push: Push | None = None) -> list[dict[str, Any]]:
        """An app session from OPEN at `t` to its CLOSE; opened by `push` when given."""
        r = self.rng
        dev = self.app_device(ch)
        out: list[dict[str, Any]] = []
        if not ch.first_opened:
            ch.first_opened = True
            out.append(self.event("FIRST_OPEN", t, t + self.lag(), dev, None, ch))
        session = self.uuid()
        open_body = self._session_body(session, ch, t, push)
        out.append(self.event("OPEN", t, t + self.lag(), dev, open_body, ch))
        length = max(5_000, min(SESSION_CAP_MS, int(SESSION_MEDIAN_MS * r.lognormvariate(0, 0.9))))
        end = t + length
        prev = None
        screens = 1 + min(9, length // 60_000)
        for i in range(screens):
            st = t + 500 + (length - 1_000) * i // screens + r.randrange(0, 500)
            screen = r.choice(SCREENS)
            body = {"session_id": session, "viewed_screen": screen,
                    "duration": min(length // screens, r.randrange(500, 60_000))}
            if prev:
                body["previous_screen"] = prev
            prev = screen
            out.append(self.event("SCREEN_VIEWED", st, st + self.lag(), dev, body, ch))
        if r.random() < 0.45:
            out.append(self.custom_event(ch, dev, t + r.randrange(length), session,
                                         open_body.get("triggering_push")))
        location = ch.device is not None and ch.device["attributes"]["location_enabled"] == "true"
        if r.random() < 0.15 and location:
            lt = t + r.randrange(length)
            out.append(self.event("LOCATION", lt, lt + self.lag(), dev, {
                "latitude": f"{r.uniform(-60, 60):.6f}", "longitude": f"{r.uniform(-150, 150):.6f}",
                "foreground": True, "session_id": session}, ch))
        if r.random() < 0.05:
            gt = t + r.randrange(length)
            region = self.uuid()
            dev_g = {**dev, "identifiers": {**dev["identifiers"],
                                            "com.urbanairship.gimbal.aii": self.uuid()}}
            out.append(self.event("REGION", gt, gt + self.lag(), dev_g, {
                "action": r.choice(("enter", "exit")), "region_id": region, "name": "Store 12",
                "source_info": {"source": "Gimbal", "region_id": region}, "session_id": session}, ch))
        if r.random() < 0.08:
            ft = t + r.randrange(length)
            out.append(self.event("FEATURE_FLAG_INTERACTION", ft, ft + self.lag(), dev, {
                "flag_id": "8b0b3c3e-2c49-4e43-a4e3-1f2f1b2f8c11", "flag_name": "new_checkout",
                "eligible": r.random() < 0.7, "variant_id": r.choice(("a", "b"))}, ch))
        if r.random() < 0.12:
            out.extend(self._in_app_message(ch, dev, t + r.randrange(length // 2 + 1), session))
        r_close = r.random()
        if r_close >= LOST_CLOSE + LATENT_CLOSE:
            out.append(self.event("CLOSE", end, end, dev, {"session_id": session}, ch))
        elif r_close >= LOST_CLOSE:
            # The upload as the app went to the background failed: the next start sends it.
            self.later(end + r.randrange(HOUR_MS, 30 * HOUR_MS), self._latent_close, ch, session, end)
        self._uploaded(out, end)
        return out

    def _latent_close(self, at: int, ch: Channel, session: str, end: int) -> list[dict[str, Any]]:
        return [self.event("CLOSE", end, at, self.app_device(ch), {"session_id": session}, ch)]

    def _uploaded(self, events: list[dict[str, Any]], background: int | None) -> None:
        """Set `processed` of one device's events as its SDK uploads them (UPLOAD_EVERY_MS, and
        at `background` when the app goes there): a batch reaches Airship together."""
        batch: list[dict[str, Any]] = []
        start = 0
        for ev in sorted(events, key=lambda ev: ev["occurred"]):
            if batch and ev["occurred"] - start >= UPLOAD_EVERY_MS:
                self._send_batch(batch, start + UPLOAD_EVERY_MS, background)
                batch = []
            if not batch:
                start = ev["occurred"]
            batch.append(ev)
        if batch:
            self._send_batch(batch, start + UPLOAD_EVERY_MS, background)

    def _send_batch(self, batch: list[dict[str, Any]], due: int, background: int | None) -> None:
        sent = min(due, background) if background is not None else due
        processed = max(sent, batch[-1]["occurred"]) + self.lag()
        for ev in batch:
            ev["processed"] = processed

    def custom_event(self, ch: Channel, dev: dict[str, Any], t: int, session: str | None,
                     triggering: dict[str, Any] | None) -> dict[str, Any]:
        r = self.rng
        name, has_value, _ = r.choices(CUSTOM_EVENTS, CUSTOM_WEIGHTS)[0]
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
        t = now - r.randrange(0, 30_000)
        ch = self.pick_user(*APP_PLATFORMS, at=t)
        dev = self.app_device(ch)
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
        self._uploaded(out, None)
        if r.random() < 0.3:
            out.append(self.event("LABEL_EVENT", t, t + self.lag(), None, {
                "push_id": push.push_id, "group_id": push.group_id,
                "labels": [{"id": p, "label": f"page {i + 1}"} for i, p in enumerate(pages)]}))
        return out

    def _web_session(self, now: int) -> list[dict[str, Any]]:
        t = now - self.rng.randrange(0, 60_000)
        return self._web_visit(self.pick_user("WEB", at=t), t)

    def _web_visit(self, ch: Channel, t: int, push: Push | None = None) -> list[dict[str, Any]]:
        """A web session from WEB_SESSION at `t`; after a click on `push`'s notification when given."""
        r = self.rng
        dev = self.web_device(ch)
        out: list[dict[str, Any]] = []
        if not ch.first_opened:
            ch.first_opened = True
            out.append(self.event("FIRST_OPEN", t, t + self.lag(), dev, None, ch))
        session = self.uuid()
        body = self._session_body(session, ch, t, push)
        out.append(self.event("WEB_SESSION", t, t + self.lag(), dev, body, ch))
        for _ in range(r.randrange(1, 4)):
            t += r.randrange(3_000, 60_000)
            out.append(self.event("SCREEN_VIEWED", t, t + self.lag(), dev, {
                "session_id": session, "viewed_screen": r.choice(SCREENS),
                "duration": r.randrange(500, 30_000)}, ch))
        if r.random() < 0.3:
            out.append(self.custom_event(ch, dev, t + 500, session, body.get("triggering_push")))
        self._uploaded(out, None)
        return out

    # ------------------------------------------------------------------ pushes and their fate
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
        pool = self._pool(tuple(sorted(p.upper() for p in platforms)))
        if resource == "PIPELINES":  # an automation: the few whose behaviour triggered it
            audience = [r.choice(pool) for _ in range(r.randrange(1, 6))]
        else:  # a campaign to a segment
            audience = r.sample(pool, min(len(pool), max(1, int(len(pool) * r.uniform(*SEGMENT)))))
        experiment = self.uuid() if push.variant_id is not None else None
        reached: set[str] = set()
        st = t + r.randrange(100, 5_000)
        for ch in audience:
            if ch.channel in reached or not self._reachable(ch, t):
                continue
            reached.add(ch.channel)
            st += r.randrange(2, 40)  # Airship fans a push out in seconds
            out.extend(self._deliver(push, ch, st, experiment))
        return out

    def _reachable(self, ch: Channel, t: int) -> bool:
        if ch.retired or ch.installed_at > t:
            return False
        if ch.platform in APP_PLATFORMS:
            return self.push_opted_in(ch)
        return ch.opted_in or ch.platform == "WEB"

    def _deliver(self, push: Push, ch: Channel, st: int, experiment: str | None
                 ) -> list[dict[str, Any]]:
        """The send of `push` to `ch` at `st`, and what the person did about it."""
        r = self.rng
        dev = self.any_device(ch)
        app = ch.platform in APP_PLATFORMS
        roll = r.random()
        if app and ch.gone_at is None and roll < 0.02:
            return [self.event("SEND_REJECTED", st, st + self.server_lag(), self.app_device(ch, named=False), {
                **self.push_fields(push), "status": r.choice(("BadDeviceToken", "Unavailable"))})]
        if app and ch.gone_at is None and roll < 0.04:
            return [self.event("SEND_ABORTED", st, st + self.server_lag(), self.app_device(ch, named=False), {
                **self.push_fields(push),
                "reason": r.choice(("FREQUENCY_LIMIT_REACHED", "FEED_REQUEST_REJECTED", "UNKNOWN"))})]
        if experiment and (app or ch.platform == "WEB") and roll < 0.2:
            return [self.event("CONTROL", st, st + self.server_lag(), dev, {
                **self.push_fields(push), "experiment_id": experiment}, ch,
                experiment_id=experiment)]
        send_body: dict[str, Any] = {**self.push_fields(push), "alerting": True}
        if push.variant_id is not None:
            send_body["variant_id"] = push.variant_id
        if ch.platform == "EMAIL":
            send_body.update(click_tracking=True, open_tracking=True)
        top = {}
        if experiment:
            top["experiments"] = {"experiment_id": experiment, "type": "EXP_GROUP",
                                  "variant_id": str(push.variant_id)}
        out = [self.event("SEND", st, st + self.server_lag(), dev, send_body, ch, **top)]
        if ch.gone_at is not None:
            out.append(self._uninstall_found_by_send(ch, dev, st))
            return out
        ch.last_push = (push, st)
        if app:
            reaction = r.random()
            if reaction < DIRECT_OPEN[ch.platform]:
                self.later(st + self.delay(TIME_TO_OPEN_MS[ch.platform], DAY_MS), self._reopen, ch, push)
            elif reaction < DIRECT_OPEN[ch.platform] + INFLUENCED_OPEN[ch.platform]:
                self.later(st + r.randrange(MINUTE_MS, 12 * HOUR_MS), self._reopen, ch, None)
        elif ch.platform == "WEB":
            if r.random() < WEB_CLICK:
                self.later(st + self.delay(30 * MINUTE_MS, DAY_MS), self._web_click, ch, push)
        elif ch.platform == "EMAIL":
            out.extend(self._email_engagement(ch, push, st))
        elif ch.platform == "SMS":
            out.extend(self._sms_engagement(ch, push, st))
        return out

    def _reopen(self, at: int, ch: Channel, push: Push | None) -> list[dict[str, Any]]:
        """The app opened after a send: through the push (`push`), or prompted by it."""
        return [] if ch.retired or ch.gone_at is not None else self._session(ch, at, push)

    def _web_click(self, at: int, ch: Channel, push: Push) -> list[dict[str, Any]]:
        if ch.retired or ch.gone_at is not None:
            return []
        out = [self.event("WEB_CLICK", at, at + self.lag(), self.web_device(ch, locale=False),
                          self.associated(push), ch)]
        return out + self._web_visit(ch, at + self.rng.randrange(100, 2_000), push)

    def _email_engagement(self, ch: Channel, push: Push, st: int) -> list[dict[str, Any]]:
        """Airship's email events for one send: delivered or bounced, then opens, clicks,
        unsubscribes, each after what makes it possible."""
        r = self.rng
        props = {"email": ch.address, "sender": EMAIL_SENDER, "subject": "News"}
        dev = {"channel": ch.channel, "device_type": "EMAIL", "delivery_address": ch.address}
        trig = self.associated(push)
        dt = st + r.randrange(2_000, 60_000)
        roll = r.random()
        if roll < EMAIL_HARD_BOUNCE + EMAIL_SOFT_BOUNCE:
            hard = roll < EMAIL_HARD_BOUNCE
            out = [self.event("CUSTOM", dt, dt + self.lag(), dev, {
                "name": "bounce", "source": "API", "triggering_push": trig,
                "properties": {**props, "bounce_class": "10" if hard else "22",
                               "bounce_event_type": "bounce"}})]
            if hard:  # an address that does not exist: Airship suppresses it
                out.extend(self._email_suppressed(ch, dt + 1_000))
            return out
        out = [self.event("CUSTOM", dt, dt + self.lag(), dev, {
            "name": "delivery", "source": "API", "properties": props, "triggering_push": trig})]
        if r.random() < EMAIL_OPEN:
            self.later(dt + self.delay(3 * HOUR_MS, 2 * DAY_MS), self._email_read, ch, push)
        return out

    def _email_read(self, ot: int, ch: Channel, push: Push) -> list[dict[str, Any]]:
        """The email opened at `ot`, then perhaps a link clicked or the footer's unsubscribe."""
        if ch.retired:
            return []
        r = self.rng
        props = {"email": ch.address, "sender": EMAIL_SENDER, "subject": "News"}
        dev = {"channel": ch.channel, "device_type": "EMAIL", "delivery_address": ch.address}
        trig = self.associated(push)
        metrics = {"agent_family": "Gmail", "device_family": "Other", "is_mobile": False,
                   "is_prefetched": False, "os_family": "Windows", "os_version": "11"}
        out = [self.event("CUSTOM", ot, ot + self.lag(), dev, {
            "name": "open", "source": "API", "triggering_push": trig,
            "properties": {**props, **metrics}})]
        if r.random() < EMAIL_CLICK_OF_OPEN:
            ct = ot + r.randrange(3_000, 120_000)
            out.append(self.event("CUSTOM", ct, ct + self.lag(), dev, {
                "name": "click", "source": "API", "triggering_push": trig,
                "properties": {**props, **metrics, "link_name": "shop",
                               "link_url": "https://example.com/shop"}}))
        if r.random() < EMAIL_UNSUBSCRIBE / EMAIL_OPEN:  # the footer link: read, then left
            out.extend(self._email_unsubscribe(ch, ot + r.randrange(5_000, 300_000), trig))
        return out

    def _email_unsubscribe(self, ch: Channel, t: int, trig: dict[str, Any]) -> list[dict[str, Any]]:
        dev = {"channel": ch.channel, "device_type": "EMAIL", "delivery_address": ch.address}
        ident = {"address": ch.address}
        consent_dev = self.address_device(ch, named_key="named_user")
        self._lose_subscriber(ch)
        return [
            self.event("CUSTOM", t, t + self.lag(), dev, {
                "name": "unsubscribe", "source": "API", "triggering_push": trig,
                "properties": {"unsubscribe_event_type": "link_unsubscribe"}}),
            self.event("COMPLIANCE", t + 5, t + 5 + self.lag(), consent_dev, {
                "event_type": "registration", "identifiers": ident,
                # Without message_type: the schema's two unsubscribe shapes overlap otherwise.
                "properties": {"registration_type": "unsubscribe", "suppression_state": "none"}}),
            self.event("SUBSCRIPTION", t + 10, t + 10 + self.lag(), consent_dev, {
                "event_type": "link_unsubscribe", "identifiers": ident,
                "properties": {"commercial_opted_out": iso_ms(t)}}, ch),
        ]

    def _email_suppressed(self, ch: Channel, t: int) -> list[dict[str, Any]]:
        dev = self.address_device(ch, named_key="named_user")
        ident = {"address": ch.address}
        self._lose_subscriber(ch)
        return [
            self.event("COMPLIANCE", t, t + self.lag(), dev, {
                "event_type": "bounce", "identifiers": ident,
                "properties": {"bounce_class": 10, "bounce_event_type": "bounce",
                               "email": ch.address, "sender": EMAIL_SENDER, "subject": "News"}}),
            self.event("SUBSCRIPTION", t + 10, t + 10 + self.lag(), dev, {
                "event_type": "bounce", "identifiers": ident}, ch),
        ]

    def _sms_engagement(self, ch: Channel, push: Push, st: int) -> list[dict[str, Any]]:
        """The carrier's delivery reports for one SMS, then a link click or a STOP reply."""
        r = self.rng
        dev = {"channel": ch.channel, "device_type": "SMS", "delivery_address": ch.address}
        trig = self.associated(push)
        vendor_id = f"SM{self.rng.getrandbits(128):032x}"
        props = {"sender": SENDERS[0], "vendor": "TWILIO", "vendorDeliveryId": vendor_id}
        t = st + r.randrange(500, 5_000)
        out = [self.event("CUSTOM", t, t + self.lag(), dev, {
            "name": "dispatched", "interaction_type": "delivery_report", "source": "API",
            "properties": props, "triggering_push": trig})]
        t += r.randrange(1_000, 30_000)
        if r.random() < SMS_UNDELIVERED:
            out.append(self.event("CUSTOM", t, t + self.lag(), dev, {
                "name": r.choice(("undeliverable", "failed")), "interaction_type": "delivery_report",
                "source": "API", "properties": {**props, "error_code": "30003"},
                "triggering_push": trig}))
            return out
        out.append(self.event("CUSTOM", t, t + self.lag(), dev, {
            "name": "delivered", "interaction_type": "delivery_report", "source": "API",
            "properties": props, "triggering_push": trig}))
        reaction = r.random()
        if reaction < SMS_CLICK:
            self.later(t + self.delay(5 * MINUTE_MS, DAY_MS), self._sms_click, ch, push)
        elif reaction < SMS_CLICK + SMS_STOP:
            self.later(t + self.delay(10 * MINUTE_MS, DAY_MS), self._sms_opt_out, ch)
        return out

    def _sms_click(self, ct: int, ch: Channel, push: Push) -> list[dict[str, Any]]:
        return [self.event("SHORT_LINK_CLICK", ct, ct + self.lag(), {
            **self.sms_device(ch), "attributes": {"web_user_agent_string": "Mozilla/5.0"}}, {
            **self.push_fields(push), "properties": {"original_url": "https://example.com/sale"}})]

    def _sms_opt_out(self, t: int, ch: Channel) -> list[dict[str, Any]]:
        if ch.retired:
            return []
        r = self.rng
        dev = self.sms_device(ch)
        ident = {"msisdn": ch.address, "sender": SENDERS[0]}
        kw = r.choice(("STOP", "STOP", "STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"))
        self._lose_subscriber(ch)
        return [
            self.event("COMPLIANCE", t, t + self.lag(), dev, {
                "event_type": "mobile_opt_out", "identifiers": ident,
                "properties": {"keyword": kw, "inbound_message": kw,
                               "outbound_message": "You are unsubscribed."}}),
            self.event("COMPLIANCE", t + 5, t + 5 + self.lag(), dev, {
                "event_type": "opted_out", "identifiers": ident}),
        ]

    def _lose_subscriber(self, ch: Channel) -> None:
        """A subscriber who left is not sent to again; a new one signs up in their place."""
        ch.opted_in = False
        self._retire(ch)
        self._owed_signups.append(ch.platform)

    # ------------------------------------------------------------------ subscribers
    def _signup(self, platform: str, now: int) -> list[dict[str, Any]]:
        """A new email address, phone number or open channel subscribes: its first events."""
        r = self.rng
        t = now - r.randrange(0, 30_000)
        ch = self._install_channel(platform, t)
        ch.opted_in = True
        if platform == "OPEN":
            return [self.event("FIRST_OPT_IN", t, t + self.lag(), self.open_device(ch), None)]
        ch.installed_at = t + 40  # sendable from its FIRST_OPT_IN on
        if platform == "EMAIL":
            dev = self.address_device(ch, named_key="named_user")
            ident = {"address": ch.address}
            if r.random() < 0.1:  # a receipt to a new address: a transactional channel only
                ch.opted_in = False
                return [self.event("COMPLIANCE", t, t + self.lag(), dev, {
                    "event_type": "create_and_send", "identifiers": ident,
                    "properties": {"channel_registered": True, "transactional_opted_in": iso_ms(t)}})]
            return [
                self.event("COMPLIANCE", t, t + self.lag(), dev, {
                    "event_type": "registration", "identifiers": ident,
                    "properties": {"registration_type": "create", "commercial_opted_in": iso_ms(t),
                                   "suppression_state": "none", "source": "ui"}}),
                self.event("FIRST_OPT_IN", t + 40, t + 40 + self.lag(), self.address_device(ch), None),
                self.event("SUBSCRIPTION", t + 60, t + 60 + self.lag(), dev, {
                    "event_type": "registration", "identifiers": ident,
                    "properties": {"commercial_opted_in": iso_ms(t),
                                   "transactional_opted_in": iso_ms(t)}}, ch),
            ]
        dev = self.sms_device(ch)
        ident = {"msisdn": ch.address, "sender": SENDERS[0]}
        kind = r.choice(("mobile_opt_in", "registration", "api_initiate_opt_in"))
        if kind == "registration":
            out = [self.event("COMPLIANCE", t, t + self.lag(), dev, {
                "event_type": kind, "identifiers": ident,
                "properties": {"registration_type": "create", "opted_in": iso_ms(t)}})]
        else:
            out = []
            if kind == "api_initiate_opt_in":  # double opt-in: Airship texts, the person replies
                out.append(self.event("COMPLIANCE", t, t + self.lag(), dev, {
                    "event_type": kind, "identifiers": ident}))
                if r.random() < 0.25:
                    ch.opted_in = False  # never answered
                    return out
                t += self.delay(2 * MINUTE_MS, HOUR_MS)
                ch.installed_at = t + 40
            word = "JOIN" if kind == "mobile_opt_in" else "Y"
            out.append(self.event("COMPLIANCE", t, t + self.lag(), dev, {
                "event_type": "mobile_opt_in", "identifiers": ident,
                "properties": {"keyword": word, "inbound_message": word,
                               "outbound_message": "Thanks for joining!"}}))
        out.append(self.event("FIRST_OPT_IN", t + 40, t + 40 + self.lag(), self.address_device(ch), None))
        return out

    def _email_preferences(self, now: int) -> list[dict[str, Any]]:
        """A subscriber changes their lists in the preference centre."""
        r = self.rng
        ch = self.pick("EMAIL")
        t = now - r.randrange(0, 30_000)
        dev = self.address_device(ch, named_key="named_user")
        lists = ("weekly_digest", "product_updates")
        change = {"enrolled": [r.choice(lists)], "canceled": []}
        if r.random() < 0.3:
            change = {"enrolled": [], "canceled": [r.choice(lists)]}
        return [self.event("SUBSCRIPTION", t, t + self.lag(), dev, {
            "event_type": "registration", "identifiers": {"address": ch.address},
            "subscription_lists": change}, ch)]

    def _inbound_sms(self, now: int) -> list[dict[str, Any]]:
        """A subscriber texts the short code: a question, or HELP (answered, consent unchanged)."""
        r = self.rng
        ch = self.pick("SMS")
        t = now - r.randrange(0, 30_000)
        ident = {"msisdn": ch.address, "sender": SENDERS[0]}
        if r.random() < 0.9:
            return [self.event("MOBILE_ORIGINATED", t, t + self.lag(), self.sms_device(ch), {
                "event_type": "mobile_originated_sms", "identifiers": ident,
                "properties": {"inbound_message": "Where is my order?", "keyword": "ORDER",
                               "outbound_message": "Check the app for tracking."}})]
        dev = self.sms_device(ch)
        out = [self.event("COMPLIANCE", t, t + self.lag(), dev, {
            "event_type": "mobile_keyword_matched", "identifiers": ident,
            "properties": {"keyword": "HELP", "inbound_message": "HELP",
                           "outbound_message": "Reply STOP to stop."}})]
        if r.random() < 0.5:  # the help text went out as a separate message
            out.append(self.event("COMPLIANCE", t + 900, t + 900 + self.lag(), dev, {
                "event_type": "mobile_terminated_message", "identifiers": ident}))
        return out

    def _rnd_scan(self, now: int) -> list[dict[str, Any]]:
        """The monthly reassigned-numbers scan of one number: mostly nothing to do."""
        r = self.rng
        ch = self.pick("SMS")
        ident = {"msisdn": ch.address, "sender": SENDERS[0]}
        if r.random() < 0.2:  # the number now belongs to someone else, or was disconnected
            self._lose_subscriber(ch)
            return [self.event("COMPLIANCE", now, now + self.lag(), None, {
                "event_type": "carrier_deactivation", "identifiers": ident,
                "properties": {"action": r.choice(("uninstalled", "suppressed"))}})]
        return [self.event("COMPLIANCE", now, now + self.lag(), self.sms_device(ch), {
            "event_type": "rnd_scan", "identifiers": ident,
            "properties": {"action": "none", "reassigned": False, "scan_id": self.uuid(),
                           "source": "monthly_scan"}})]

    # ------------------------------------------------------------------ profiles, inbox, others
    def _profile_change(self, now: int) -> list[dict[str, Any]]:
        r = self.rng
        ch = self.rng.choice(self.channels)
        while ch.retired:
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

    def _message_center(self, now: int) -> list[dict[str, Any]]:
        r = self.rng
        t = now - r.randrange(0, 30_000)
        ch = self.pick_user(*APP_PLATFORMS, at=t)
        dev = self.app_device(ch)
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

    def _open_channel(self, now: int) -> list[dict[str, Any]]:
        ch = self.pick("OPEN")
        t = now - self.rng.randrange(0, 30_000)
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
