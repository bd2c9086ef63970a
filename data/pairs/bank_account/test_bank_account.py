import pytest
from bank_account import Account, InsufficientFunds


@pytest.fixture
def account():
    return Account("ada", 100)


def test_deposit_and_withdraw(account):
    assert account.deposit(50) == 150
    assert account.withdraw(30) == 120
    assert account.balance == 120


def test_withdraw_everything(account):
    assert account.withdraw(100) == 0


def test_overdraw(account):
    with pytest.raises(InsufficientFunds, match="ada has only 100"):
        account.withdraw(101)


@pytest.mark.parametrize("amount", [0, -5])
def test_non_positive_amounts(account, amount):
    with pytest.raises(ValueError):
        account.deposit(amount)
    with pytest.raises(ValueError):
        account.withdraw(amount)


def test_negative_opening_balance():
    with pytest.raises(ValueError):
        Account("bob", -1)
    assert Account("bob").balance == 0
