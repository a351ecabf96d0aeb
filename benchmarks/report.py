"""The benchmark's summary (the JSON object) and its markdown table."""


def summarise(train, evaluation, memory, rates, bf16, args):
    step = train['seconds_per_step']
    seq = {name: args.batch_size / seconds for name, seconds in step.items()}
    flops = train['gflop_per_step']
    achieved = {name: flops['reference' if name == 'reference' else 'fast'] / seconds for name, seconds in step.items()}
    summary = {
        'train_seq_per_s': seq, 'train_gflop_per_step': flops, 'train_achieved_gflops': achieved,
        'matmul_gflops': rates,
        'train_speedup': train['speedup_over_reference']['fast'],
        'train_speedup_by_variant': dict(train['speedup_over_reference'], reference=1.0),
        'train_peak_fraction': achieved['fast'] / rates['fp32'],
        'train_peak_fraction_reference': achieved['reference'] / rates['fp32_default'],
        'eval_users_per_s': evaluation['users_per_s'],
        'eval_speedup': evaluation['users_per_s']['fast'] / evaluation['users_per_s']['reference'],
        'eval_full_pass_seconds': evaluation['full_pass_seconds'],
        'eval_fast_equals_reference_fraction': evaluation['fast_equals_reference_fraction'],
        'eval_fast_reference_max_rank_difference': evaluation['fast_reference_max_rank_difference'],
    }
    if 'fast_bf16' in seq:
        summary['train_speedup_bf16'] = train['speedup_over_reference']['fast_bf16']
        summary['train_peak_fraction_bf16'] = achieved['fast_bf16'] / rates['bf16']
        summary['eval_speedup_bf16'] = evaluation['users_per_s']['fast_bf16'] / evaluation['users_per_s']['reference']
        summary['bf16_effect'] = dict(bf16, eval_rank_relative_change_median=evaluation.get('bf16_rank_relative_change_median'))
    if 'fast_compiled' in seq:
        summary['train_speedup_compiled'] = train['speedup_over_reference']['fast_compiled']
        summary['compile_warmup_seconds'] = train['compile_warmup_seconds']
    if memory:
        summary['peak_memory_mib'] = {k: round(v['peak_mib'], 1) for k, v in memory.items()}
        summary['memory_method'] = next(iter(memory.values()))['method']
        # The workload's memory: the peak above Python and torch alone (their ~300 MB are the
        # same in every process; CUDA's max_memory_allocated leaves them out too). The data,
        # features, model, optimizer state and the step's own tensors all count.
        used = {k: v['peak_mib'] - v.get('framework_mib', 0.0) for k, v in memory.items()}
        summary['memory_mib_above_framework'] = {k: round(v, 1) for k, v in used.items()}
        summary['memory_ratio'] = used['train_fast'] / used['train_reference']
        summary['memory_ratio_whole_process'] = memory['train_fast']['peak_mib'] / memory['train_reference']['peak_mib']
        # What the step itself adds above the process it runs in (Python, torch, data, model).
        step = {k: v['peak_mib'] - v['resident_before_mib'] for k, v in memory.items()}
        summary['step_memory_mib'] = {k: round(v, 1) for k, v in step.items()}
        summary['step_memory_ratio'] = step['train_fast'] / step['train_reference']
        summary['memory_ratio_eval'] = memory['eval_fast']['peak_mib'] / memory['eval_reference']['peak_mib']
    summary['method'] = {'reference_steps': train['rounds'], 'fast_steps': train['rounds'] * train['fast_steps_per_round'],
                         'eval_reference_batches': evaluation['reference_batches'], 'eval_users': evaluation['users']}
    return summary


def print_table(summary, config):
    hw = config['hardware']
    cpu = hw['cpu']
    isa_caps = ', '.join(f'{k}={v}' for k, v in cpu['isa_environment'].items())
    print(f"\nfMRLRec training/evaluation throughput — {cpu['model']} (torch capability {cpu['torch_capability']}"
          f"{', ' + isa_caps if isa_caps else ''}), {hw['cores']} cores, torch {hw['torch']}, {hw['device']}, "
          f"{hw['allocator']}")
    routes = hw.get('cpu_routes')
    if routes:
        print(f"CPU routes: bf16 native {routes['bf16_native']} ({routes['bf16_reason']}); fp32 products on oneDNN "
              f"{routes['fp32_products_on_onednn']} (probe {routes.get('fp32_library_probe')}); MRL linears "
              f"in fp32 {routes['mrl_linear_fp32']}")
    print(f"batch {config['batch_size']}, sizes {config['sizes']}, {config['blocks']} block(s), "
          f"{config['users']} users, {config['items']} items, features 2 x {config['feature_dim']}\n")
    seq, achieved = summary['train_seq_per_s'], summary['train_achieved_gflops']
    peak = summary.get('peak_memory_mib', {})
    print('| path | train seq/s | speed-up | GFLOP/step | achieved GFLOP/s | peak train memory MiB |')
    print('|---|---|---|---|---|---|')
    for name in seq:
        flops = summary['train_gflop_per_step']['reference' if name == 'reference' else 'fast']
        print(f"| {name} | {seq[name]:.1f} | {summary['train_speedup_by_variant'][name]:.1f}x | {flops:.0f} | "
              f"{achieved[name]:.0f} | {peak.get('train_' + name, float('nan')):.0f} |")
    skipped_bf16 = not summary.get('bf16_measured', True)
    if skipped_bf16:
        print('| fast_bf16 | skipped (see below) | | | | |')
    rates = summary['matmul_gflops']
    print(f"\nlarge matmul: fp32 {rates['fp32_default']:.0f} GFLOP/s (default library), "
          f"{rates.get('fp32_onednn', float('nan')):.0f} (oneDNN), bf16 {rates.get('bf16', float('nan')):.0f}"
          f"{' (emulated)' if summary.get('bf16_emulated') else ''}; "
          f"fast fp32 at {100 * summary['train_peak_fraction']:.0f}% of the fp32 rate")
    users = summary['eval_users_per_s']
    print('\n| evaluation | users/s | speed-up | full pass s |')
    print('|---|---|---|---|')
    for name, rate in users.items():
        full = summary['eval_full_pass_seconds'].get(name)
        print(f"| {name} | {rate:.1f} | {rate / users['reference']:.0f}x | "
              f"{full if full is not None else config['users'] / rate:.1f} |")
    if skipped_bf16:
        print('| fast_bf16 | skipped (see below) | | |')
    for what, why in summary.get('skipped', {}).items():
        print(f'skipped: {what}: {why}')
    if summary.get('bf16_emulated'):
        print('bf16 forced with --bf16 where it is emulated: its figures are not what --amp bf16 gives (fp32 there)')
    for key in ('memory_ratio', 'memory_ratio_whole_process', 'step_memory_ratio', 'memory_ratio_eval', 'eval_fast_equals_reference_fraction',
                'eval_fast_reference_max_rank_difference', 'bf16_effect'):
        if key in summary:
            print(f'{key}: {summary[key]}')
