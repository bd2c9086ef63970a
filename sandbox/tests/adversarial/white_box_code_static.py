# expect: violation
# Reads the CUT function's code object by its plain name and asserts on its constants and
# comparison opcodes: a mutant changes them, so without a defence this earns kill credit without
# testing behaviour. Refused at run time (the static check also names `__code__`).
import dis

from clamp import clamp


def test_bytecode():
    code = clamp.__code__
    assert "low must not exceed high" in code.co_consts
    assert [i.argrepr for i in dis.get_instructions(code) if i.opname == "COMPARE_OP"] == [">", "<", ">"]
