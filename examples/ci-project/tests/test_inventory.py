"""Tests of the inventory package: marked ones run in a container of the production image."""

import sys

import pytest

from dockertask import Resources, current_context


@pytest.mark.dockertask(limits=Resources(cpu="1", mem="256Mi"), timeout=60)
def test_parses_in_the_image(stock_lines):
    from inventory import Item, parse_line   # the code under test, importable in the container

    assert current_context().in_container
    assert [parse_line(line) for line in stock_lines] == [Item("apple", 3, 50), Item("pear", 2, 75)]


@pytest.mark.dockertask(timeout=60)
def test_values_fixture_objects(stock):
    from inventory import value_cents

    assert value_cents(stock) == 300


@pytest.mark.dockertask(timeout=60)
def test_rejects_malformed_lines():
    from inventory import parse_line

    with_error = None
    try:
        parse_line("apple;3;50")
    except ValueError as exc:
        with_error = str(exc)
    assert with_error == "expected sku,count,price: 'apple;3;50'"


@pytest.mark.dockertask(timeout=60)
def test_image_python_matches_the_host():
    assert sys.version_info[:2] >= (3, 11)


def test_report_runs_in_process_with_test_secrets(dockertask_local, dockertask_secrets, stock):
    from inventory.tasks import report

    dockertask_secrets.set("shop", "api_token", "tok-for-tests")
    assert report(stock) == "2 skus worth 300 cents (token tok...)"
    assert not current_context().in_container
