"""SPORTELLO_GATEWAY means the same to the client as to the `sportello` CLIs: `host:port` or a
URL (`http://host:port`, `https://host:port` for TLS)."""

import pytest

from sportello_client import gateway_target


def test_host_and_port_and_a_url_name_the_same_gateway():
    assert gateway_target("127.0.0.1:50051") == ("127.0.0.1:50051", False)
    assert gateway_target("http://127.0.0.1:50051") == ("127.0.0.1:50051", False)
    assert gateway_target("http://127.0.0.1:50051/") == ("127.0.0.1:50051", False)
    assert gateway_target("[::1]:50051") == ("[::1]:50051", False)
    assert gateway_target("https://sportello.example") == ("sportello.example:443", True)


@pytest.mark.parametrize("bad", [
    "", "127.0.0.1", "http://", "grpc://127.0.0.1:50051", "http://127.0.0.1:50051/sportello",
    "http://user@127.0.0.1:50051", "127.0.0.1:port",
])
def test_a_path_another_scheme_or_a_bare_host_without_port_is_refused(bad):
    with pytest.raises(ValueError, match="host:port or http://host:port"):
        gateway_target(bad)
