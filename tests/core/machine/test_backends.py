

def test_the_amx_variant_is_never_chosen_where_the_kernel_does_not_enable_amx() -> None:
    from app.core.machine import backends

    lc = backends.llama_cpp_module()
    state = backends.ensure_loaded(lc)
    usable = backends.amx_usable()
    assert isinstance(usable, bool)
    if state.dynamic and not usable and not state.forced:
        assert state.cpu_variant != "sapphirerapids"
