from __future__ import annotations

import pytest

from pgpubsub.models import Notification
from testapp.models import Author


@pytest.mark.django_db(transaction=True)
def test_inserting_an_author_stores_one_notification_on_its_lockable_channel() -> None:
    Author.objects.create(name="Ann")
    (stored,) = Notification.objects.all()
    assert stored.payload["new"]["name"] == "Ann"
    assert stored.payload["old"] is None
