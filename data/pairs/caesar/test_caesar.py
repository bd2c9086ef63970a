from caesar import decrypt, encrypt


def test_encrypt():
    assert encrypt("abc", 1) == "bcd"
    assert encrypt("xyz", 3) == "abc"
    assert encrypt("Hello, World!", 13) == "Uryyb, Jbeyq!"


def test_decrypt_inverts():
    for key in [0, 1, 7, 25, 26, 40]:
        assert decrypt(encrypt("Attack at dawn", key), key) == "Attack at dawn"
