"""python-quickbooks (PyPI) and intuit-oauth against the qbo-emulator, unmodified but for URLs.

The emulator's base URL comes from QBO_EMULATOR_URL (tests/python/run.sh starts it).
"""
import os
from collections import Counter

# oauthlib refuses plain http unless told this is a local test setup (its documented switch).
os.environ.setdefault("OAUTHLIB_INSECURE_TRANSPORT", "1")

import pytest  # noqa: E402
import requests  # noqa: E402
from intuitlib.client import AuthClient  # noqa: E402
from quickbooks import QuickBooks  # noqa: E402
from quickbooks.objects.customer import Customer  # noqa: E402
from quickbooks.objects.invoice import Invoice  # noqa: E402

BASE = os.environ.get("QBO_EMULATOR_URL", "http://127.0.0.1:8080")
REALM = "9341452000000001"
PAGE = 1000


def truth(entity):
    rows = requests.get(f"{BASE}/__emulator/truth/{REALM}/{entity}", timeout=30).json()
    return sorted((r["Id"], r["SyncToken"], r["LastUpdatedTime"]) for r in rows if not r["deleted"])


@pytest.fixture(scope="module")
def qb():
    refresh = requests.get(f"{BASE}/__emulator/tokens", timeout=10).json()["refresh_token"]
    # intuit-oauth reads the token endpoint from the discovery document: pass its URL as the
    # "environment" (any value but sandbox/production is taken as the discovery URL).
    auth = AuthClient(
        client_id="emu-client-id",
        client_secret="emu-client-secret",
        redirect_uri="http://127.0.0.1/callback",
        environment=f"{BASE}/.well-known/openid-configuration",
    )
    client = QuickBooks(auth_client=auth, refresh_token=refresh, company_id=REALM, minorversion=75)
    # python-quickbooks builds API URLs from this attribute.
    client.api_url_v3 = f"{BASE}/v3"
    return client


def lut(obj):
    m = obj.MetaData  # a dict on some objects, a MetaData object on others
    return m["LastUpdatedTime"] if isinstance(m, dict) else m.LastUpdatedTime


def key(obj):
    return (obj.Id, obj.SyncToken, lut(obj))


def page_all(cls, qb, extra=""):
    """Time-cursor pager: full pages by LastUpdatedTime; a page's last second is re-read in Id
    order, since QBO orders ties arbitrarily (the emulator shuffles them per request)."""
    out, cursor, op = [], "1970-01-01T00:00:00Z", ">="
    while True:
        where = f"MetaData.LastUpdatedTime {op} '{cursor}'{extra}"
        got = cls.where(where, order_by="MetaData.LastUpdatedTime", start_position=1, max_results=PAGE, qb=qb)
        if len(got) < PAGE:
            return out + [key(o) for o in got]
        last = lut(got[-1])
        out += [key(o) for o in got if lut(o) != last]
        start = 1
        while True:
            same = cls.where(f"MetaData.LastUpdatedTime = '{last}'{extra}", order_by="Id",
                             start_position=start, max_results=PAGE, qb=qb)
            out += [key(o) for o in same]
            if len(same) < PAGE:
                break
            start += PAGE
        cursor, op = last, ">"


def test_token_refresh_through_discovery(qb):
    assert qb.auth_client.access_token
    assert qb.auth_client.token_endpoint == f"{BASE}/oauth2/v1/tokens/bearer"


def test_invoices_page_to_exactly_the_truth(qb):
    got = page_all(Invoice, qb)
    assert not [k for k, n in Counter(got).items() if n > 1], "duplicates"
    assert sorted(got) == truth("Invoice")
    assert Invoice.count(qb=qb) == len(truth("Invoice"))


def test_customers_including_inactive(qb):
    got = page_all(Customer, qb, extra=" AND Active IN (true,false)")
    assert sorted(got) == truth("Customer")
    # Without the Active filter a name list returns only active rows.
    active = Customer.where("", max_results=1000, qb=qb)
    assert all(c.Active for c in active)
    assert len(active) < len(got)
