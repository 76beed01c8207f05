"""factory-boy factories for the example app's models."""

from __future__ import annotations

from decimal import Decimal

import factory
from factory.django import DjangoModelFactory

from testapp.models import Author, Child, Media, Post


class AuthorFactory(DjangoModelFactory[Author]):
    class Meta:
        model = Author

    name = factory.Sequence(lambda n: f"Author {n}")


class PostFactory(DjangoModelFactory[Post]):
    class Meta:
        model = Post

    author = factory.SubFactory(AuthorFactory)
    title = factory.Sequence(lambda n: f"Post {n}")


class MediaFactory(DjangoModelFactory[Media]):
    class Meta:
        model = Media

    title = factory.Sequence(lambda n: f"Media {n}")
    price = Decimal("9.99")


class ChildFactory(DjangoModelFactory[Child]):
    class Meta:
        model = Child

    name = factory.Sequence(lambda n: f"Parent {n}")
    toy = "kite"
