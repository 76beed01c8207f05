"""Stored trigger payloads decode into model instances equal to the rows written."""

from __future__ import annotations

import datetime
import uuid
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from testapp.channels import ChildTriggerChannel, MediaTriggerChannel
from testapp.models import Child, Media
from tests.factories import AuthorFactory, ChildFactory, MediaFactory
from tests.integration.messaging import stored_payloads

pytestmark = pytest.mark.django_db

EXACT_PRICE = Decimal("12345678901234567890.0123456789")  # all 30 digits of the column
KOLKATA = ZoneInfo("Asia/Kolkata")


def decoded_media() -> list[dict[str, Media | None]]:
    return [
        MediaTriggerChannel.callback_kwargs(payload)
        for payload in stored_payloads(MediaTriggerChannel)
    ]


def test_decoded_row_has_every_field_of_the_written_row() -> None:
    owner = AuthorFactory.create()
    media = MediaFactory.create(
        owner=owner,
        title="Poster",
        price=EXACT_PRICE,
        ratio=0.1,
        tags={"colour": "red", "sizes": [1, 2.5], "nested": {"none": None}},
        published_at=datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=KOLKATA),
        released_on=datetime.date(2024, 2, 29),
        is_public=False,
    )

    (kwargs,) = decoded_media()

    assert kwargs["old"] is None
    new = kwargs["new"]
    assert isinstance(new, Media)
    assert new.key == media.key
    assert isinstance(new.key, uuid.UUID)
    assert new.pk == media.pk
    assert new.title == "Poster"  # column media_title
    assert new.owner_id == owner.pk  # column owner_ref
    assert new.price == EXACT_PRICE
    assert str(new.price) == str(EXACT_PRICE)
    assert new.ratio == 0.1
    assert new.tags == {"colour": "red", "sizes": [1, 2.5], "nested": {"none": None}}
    assert type(new.tags["sizes"][1]) is float
    assert new.published_at == media.published_at
    assert new.published_at is not None and new.published_at.tzinfo is not None
    assert new.released_on == datetime.date(2024, 2, 29)
    assert new.is_public is False
    assert new._state.adding  # an unsaved instance, not a fresh query


def test_decoded_update_carries_both_the_old_and_the_new_row() -> None:
    media = MediaFactory.create(title="before", price=Decimal("1.0000000001"))
    media.title = "after"
    media.price = Decimal("2.0000000002")
    media.save()

    _, updated = decoded_media()

    assert updated["old"] is not None and updated["new"] is not None
    assert (updated["old"].title, updated["old"].price) == ("before", Decimal("1.0000000001"))
    assert (updated["new"].title, updated["new"].price) == ("after", Decimal("2.0000000002"))


def test_decoded_multi_table_child_has_both_its_parent_pointer_and_id() -> None:
    child = ChildFactory.create(toy="yo-yo")

    (payload,) = stored_payloads(ChildTriggerChannel)
    new = ChildTriggerChannel.callback_kwargs(payload)["new"]

    assert isinstance(new, Child)
    assert new.parent_ptr_id == child.pk
    assert new.id == child.pk
    assert new.pk == child.pk
    assert new.toy == "yo-yo"


def test_inherited_fields_missing_from_a_stored_child_row_are_loaded_on_access() -> None:
    # What triggers generated before pgpubsub_publish_v2 stored: the child's own table only.
    child = ChildFactory.create(toy="yo-yo", name="Ann", born=datetime.date(2019, 5, 4))
    (payload,) = stored_payloads(ChildTriggerChannel)
    payload["new"] = {"parent_ptr_id": child.pk, "toy": "yo-yo"}

    new = ChildTriggerChannel.callback_kwargs(payload)["new"]

    assert new.get_deferred_fields() == {"name", "born"}
    assert (new.name, new.born) == ("Ann", datetime.date(2019, 5, 4))


def test_column_the_model_no_longer_has_is_ignored() -> None:
    MediaFactory.create(title="kept")
    (payload,) = stored_payloads(MediaTriggerChannel)
    payload["new"]["dropped_column"] = "stored before a migration removed it"

    new = MediaTriggerChannel.callback_kwargs(payload)["new"]

    assert new is not None and new.title == "kept"
    assert not hasattr(new, "dropped_column")


def test_field_missing_from_an_old_payload_gets_its_default() -> None:
    MediaFactory.create(is_public=False, ratio=0.75)
    (payload,) = stored_payloads(MediaTriggerChannel)
    del payload["new"]["is_public"], payload["new"]["ratio"]  # added after it was stored

    new = MediaTriggerChannel.callback_kwargs(payload)["new"]

    assert new is not None
    assert new.is_public is True
    assert new.ratio == 0.0
