"""One masking rule for every secret-bearing field (issue 14, item 3; DESIGN §4 invariant 10), read as a person does:
through the API, the pages and the audit log, and in alert texts and error messages.

Slack- and Teams-style webhook URLs carry their credential in the path (api.slack.com/messaging/webhooks:
``https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX``); upstream and proxy URLs carry it
as ``user:password@`` or as a query-string token.
"""

import pytest
from django.apps import apps

from core.secrets import HIDDEN, MASK, NOT_SECRET, SECRET_FIELDS, mask_text, mask_url
from mirror.choices import SyncState
from portal import alerts
from portal.choices import AlertChannelKind, AlertRuleKind, AlertState, DeliveryReason, DeliveryStatus
from portal.models import AlertChannel, AlertDelivery, AlertEvent, AlertRule
from tests.mirror.helpers import sync

SLACK_TOKEN = "s3cretSlackT0kenXXXXXXXX"
SLACK_URL = f"https://hooks.slack.com/services/T00000000/B00000000/{SLACK_TOKEN}"
TEAMS_TOKEN = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
TEAMS_URL = f"https://contoso.webhook.office.com/webhookb2/aaaa@bbbb/IncomingWebhook/{TEAMS_TOKEN}/cccc"
BASE_URL = "https://mirror-user:base-pa55word@mirror.example.org/tree/?sig=presigned-t0ken&v=1"
PROXY_URL = "http://svc:proxy-pa55word@proxy.example.org:3128"
SECRETS = (SLACK_TOKEN, TEAMS_TOKEN, "base-pa55word", "presigned-t0ken", "proxy-pa55word", "mirror-user")


def assert_no_secret(text: str) -> None:
    leaked = [secret for secret in SECRETS if secret in text]
    assert not leaked, f"{leaked} in {text[:2000]}"


# --- The rule ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, secret_path, shown",
    [
        (BASE_URL, False, "https://***@mirror.example.org/tree/?sig=***&v=***"),
        (PROXY_URL, False, "http://***@proxy.example.org:3128"),
        ("https://go.microsoft.com/fwlink/", False, "https://go.microsoft.com/fwlink/"),
        ("http://u:p@[2001:db8::1]:8080/x#frag", False, "http://***@[2001:db8::1]:8080/x"),
        (SLACK_URL, True, "https://hooks.slack.com/(hidden)"),
        ("https://user:pw@hooks.example.org:8443/h?k=v", True, "https://***@hooks.example.org:8443/(hidden)"),
        ("https://hooks.example.org/", True, "https://hooks.example.org/"),
        ("", False, ""),
        ("no url at all", False, "no url at all"),
    ],
)
def test_a_url_keeps_where_it_goes_and_masks_what_can_carry_a_credential(url, secret_path, shown):
    assert mask_url(url, secret_path=secret_path) == shown


def test_a_message_loses_userinfo_query_values_and_a_secret_path_wherever_they_are_quoted():
    text = (
        f"HTTPConnectionPool(host='hooks.slack.com', port=443): Max retries exceeded with url: "
        f"/services/T00000000/B00000000/{SLACK_TOKEN} ; proxy {PROXY_URL}; /tree/?sig=presigned-t0ken&v=1"
    )
    masked = mask_text(text, SLACK_URL, secret_path=True)
    assert_no_secret(masked)
    assert HIDDEN in masked and f"http://{MASK}@proxy.example.org:3128" in masked and "?sig=***&v=***" in masked


def test_every_url_password_token_or_secret_field_of_every_model_has_a_masking_rule():
    # A new field that can hold a credential must say here how it is shown (or why it holds nothing to hide).
    words = ("url", "password", "token", "secret", "key", "hash")
    unlisted = [
        f"{model._meta.label_lower}.{field.name}"
        for model in apps.get_models()
        if model._meta.app_label in ("core", "mirror", "fleet", "portal")
        for field in model._meta.concrete_fields
        if any(word in field.name for word in words) and field.get_internal_type() in ("CharField", "URLField")
        if field.name not in SECRET_FIELDS.get(model._meta.label_lower, {})
    ]
    assert unlisted == []


def test_the_listed_fields_exist():
    installed = {model._meta.label_lower for model in apps.get_models()}
    # A rule may name a model another change of issue 14 is adding (fleet.identityconflict); the ones here must match.
    for label, fields in SECRET_FIELDS.items():
        if label not in installed:
            continue
        model = apps.get_model(label)
        names = {field.name for field in model._meta.get_fields()} | {
            name for name in dir(model) if isinstance(getattr(model, name, None), property)
        }
        assert set(fields) <= names, label


# --- Webhook URLs: API, audit log, pages --------------------------------------------------------------------


def test_a_viewer_reads_no_webhook_credential_in_the_audit_log_of_a_channels_life(api, admin, viewer):
    as_admin = api.as_user(admin)
    created = as_admin.post("/api/v1/alert-channels/", {"name": "soc", "kind": "webhook", "url": SLACK_URL})
    assert created.status_code == 201
    pk = created.json()["id"]
    assert as_admin.patch(f"/api/v1/alert-channels/{pk}/", {"url": TEAMS_URL}, format="json").status_code == 200
    assert as_admin.delete(f"/api/v1/alert-channels/{pk}/").status_code == 204

    audit = api.as_user(viewer).get("/api/v1/audit-events/?page_size=100")
    assert audit.status_code == 200
    body = audit.content.decode()
    assert_no_secret(body)
    actions = {event["action"]: event["details"] for event in audit.json()["results"]}
    assert actions["alert_channel.create"]["url"] == f"https://hooks.slack.com/{HIDDEN}"
    assert actions["alert_channel.update"]["url"] == f"https://contoso.webhook.office.com/{HIDDEN}"
    assert actions["alert_channel.delete"]["target"] == f"https://contoso.webhook.office.com/{HIDDEN}"


def test_the_audit_page_and_the_channel_pages_show_a_viewer_no_webhook_credential(client, admin, viewer):
    client.force_login(admin)
    response = client.post(
        "/alerts/channels/new/", {"name": "soc", "kind": "webhook", "url": SLACK_URL, "recipients": "", "enabled": "on"}
    )
    assert response.status_code == 200  # the signing secret, shown once to the admin who made it
    channel = AlertChannel.objects.get()
    client.force_login(viewer)
    for page in ("/audit/", "/alerts/", f"/alerts/channels/{channel.pk}/"):
        response = client.get(page)
        assert response.status_code == 200, page
        assert_no_secret(response.content.decode())
    assert api_viewer_sees(client, channel) == f"https://hooks.slack.com/{HIDDEN}"


def api_viewer_sees(client, channel) -> str:
    return client.get(f"/api/v1/alert-channels/{channel.pk}/").json()["url"]


def test_a_failed_delivery_says_where_without_the_webhook_path(db, settings):
    settings.ALERT_RETRY_BACKOFF = 0
    url = f"http://127.0.0.1:9/services/T00000000/B00000000/{SLACK_TOKEN}?token={TEAMS_TOKEN}"
    channel = AlertChannel(name="soc", kind=AlertChannelKind.WEBHOOK, url=url)
    alerts.save_channel(channel)
    delivery = alerts.send_test(channel)
    assert delivery.status == DeliveryStatus.FAILED and delivery.error.startswith("cannot reach 127.0.0.1:9")
    assert_no_secret(delivery.error)
    assert_no_secret(str(AlertDelivery.objects.get().error))


# --- Upstream URLs: API, audit log, pages, round trips ------------------------------------------------------


def upstream_body(**overrides):
    return {"name": "tree", "kind": "mirror", "base_url": BASE_URL, "proxy_url": PROXY_URL, **overrides}


def test_upstream_credentials_are_masked_for_every_role_in_the_api_and_the_audit_log(api, admin, operator, viewer):
    created = api.as_user(admin).post("/api/v1/upstreams/", upstream_body(), format="json")
    assert created.status_code == 201, created.content
    assert_no_secret(created.content.decode())
    for user in (admin, operator, viewer):
        client = api.as_user(user)
        shown = client.get(f"/api/v1/upstreams/{created.json()['id']}/").json()
        assert shown["base_url"] == "https://***@mirror.example.org/tree/?sig=***&v=***"
        assert shown["proxy_url"] == "http://***@proxy.example.org:3128"
        assert_no_secret(client.get("/api/v1/upstreams/").content.decode())
        assert_no_secret(client.get("/api/v1/audit-events/").content.decode())


def test_an_upstream_sent_back_as_shown_keeps_its_credentials_and_a_changed_one_asks_for_them(api, admin):
    from mirror.models import Upstream

    client = api.as_user(admin)
    pk = client.post("/api/v1/upstreams/", upstream_body(), format="json").json()["id"]
    shown = client.get(f"/api/v1/upstreams/{pk}/").json()
    assert client.put(f"/api/v1/upstreams/{pk}/", {**shown, "timeout": 90}, format="json").status_code == 200
    upstream = Upstream.objects.get()
    assert (upstream.base_url, upstream.proxy_url, upstream.timeout) == (BASE_URL, PROXY_URL, 90)

    moved = shown["base_url"].replace("mirror.example.org", "other.example.org")
    refused = client.patch(f"/api/v1/upstreams/{pk}/", {"base_url": moved}, format="json")
    assert refused.status_code == 400
    assert refused.json()["errors"] == {"base_url": ["Type the URL's credentials again (they are never shown back)."]}
    assert Upstream.objects.get().base_url == BASE_URL


def test_the_mirror_pages_and_the_upstream_form_show_no_upstream_credential(client, admin, viewer, mirror):
    mirror.upstream.base_url, mirror.upstream.proxy_url = BASE_URL, PROXY_URL
    mirror.upstream.save()
    client.force_login(viewer)
    for page in ("/mirror/", f"/mirror/{mirror.slug}/"):
        response = client.get(page)
        assert response.status_code == 200
        assert_no_secret(response.content.decode())
        assert "https://***@mirror.example.org/tree/?sig=***" in response.content.decode().replace("&amp;", "&")
    client.force_login(admin)
    form = client.get(f"/mirror/upstreams/{mirror.upstream.pk}/edit/").content.decode()
    assert_no_secret(form)


def test_a_packages_source_url_is_masked_in_the_api_and_its_page(api, client, viewer, make_package):
    package = make_package()
    package.source_url = BASE_URL.replace("/tree/", "/tree/linux/production/arch_x86_64/updates.zip")
    package.save(update_fields=["source_url"])
    response = api.as_user(viewer).get(f"/api/v1/packages/{package.pk}/")
    assert response.status_code == 200
    assert response.json()["source_url"].startswith("https://***@mirror.example.org/tree/linux/")
    assert_no_secret(response.content.decode())
    client.force_login(viewer)
    page = client.get(f"/mirror/packages/{package.pk}/")
    assert page.status_code == 200
    assert_no_secret(page.content.decode())


# --- Errors and alert texts ----------------------------------------------------------------------------------


def test_a_sync_error_and_its_alert_say_where_without_the_upstreams_credentials(upstream_mirror, settings):
    # Port 9 (discard) is closed here: the sync fails, and requests' message quotes the URL it tried.
    mirror = upstream_mirror("http://mirror-user:base-pa55word@127.0.0.1:9/fwlink/?sig=presigned-t0ken")
    rule = AlertRule(name="sync", kind=AlertRuleKind.SYNC_FAILED, mirror=mirror)
    rule.full_clean(exclude=["channels"])
    alerts.save_rule(rule, [])
    run = sync(mirror)
    assert run.state == SyncState.FAILED and "cannot reach the upstream" in run.error
    assert_no_secret(run.error)
    alerts.evaluate()
    event = AlertEvent.objects.get(rule=rule, state=AlertState.FIRING)
    assert_no_secret(f"{event.summary} {event.details}")


def test_a_channels_test_message_audit_entry_holds_no_credential(db, admin):
    channel = AlertChannel(name="soc", kind=AlertChannelKind.WEBHOOK, url=f"http://127.0.0.1:9/x/{SLACK_TOKEN}")
    alerts.save_channel(channel, admin)
    alerts.send_test(channel, admin)
    from core.models import AuditEvent

    assert_no_secret(str(list(AuditEvent.objects.values_list("details", flat=True))))
    assert AlertDelivery.objects.get().reason == DeliveryReason.TEST


def test_not_secret_fields_are_said_to_be_so_on_purpose():
    # A reviewer reads this list: each one is public by nature (a portal page, a hint, an endpoint's URL).
    assert sorted(
        f"{label}.{name}"
        for label, fields in SECRET_FIELDS.items()
        for name, rule in fields.items()
        if rule == NOT_SECRET
    ) == [
        "core.apitoken.hint",
        "fleet.endpoint.offline_url_configured",
        "fleet.endpoint.token_hint",
        "fleet.enrollmentsecret.hint",
        "fleet.identityconflict.secret_hint",
        "fleet.identityconflict.token_hint",
        "mirror.mirror.public_base_url",
        "mirror.trustedbundlekey.public_key",
        "portal.alertchannel.secret_hint",
        "portal.alertevent.url",
    ]


def test_an_audit_entry_written_before_the_masking_is_masked_when_read(api, client, viewer, db):
    from core.models import AuditEvent

    # As record_event wrote it before issue 14: entries are never rewritten, so reading masks them.
    AuditEvent.objects.create(
        actor_label="alice",
        action="alert_channel.delete",
        target_type="portal.alertchannel",
        target_id="1",
        target_label="soc",
        details={"kind": "webhook", "target": SLACK_URL},
    )
    body = api.as_user(viewer).get("/api/v1/audit-events/?action=alert_channel.delete").json()
    assert body["results"][0]["details"] == {"kind": "webhook", "target": f"https://hooks.slack.com/{HIDDEN}"}
    client.force_login(viewer)
    page = client.get("/audit/")
    assert page.status_code == 200 and "hooks.slack.com/(hidden)" in page.content.decode()
    assert_no_secret(page.content.decode())


def test_an_imported_packages_source_is_masked_in_the_package_list(client, viewer, make_package):
    from mirror.choices import PackageSource

    package = make_package()
    package.source, package.source_url = PackageSource.IMPORT, BASE_URL
    package.save(update_fields=["source", "source_url"])
    client.force_login(viewer)
    page = client.get("/mirror/packages/")
    assert page.status_code == 200
    assert_no_secret(page.content.decode())
