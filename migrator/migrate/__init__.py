"""Migration of NeMo 1.0 configs: the YAML -> MegatronStrategy mapping and the YAML strip."""
