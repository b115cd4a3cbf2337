fn main() {
    ttrpc_codegen::Codegen::new()
        .out_dir("out")
        .inputs(["../api.proto"])
        .include("..")
        .rust_protobuf()
        .customize(ttrpc_codegen::Customize { ..Default::default() })
        .rust_protobuf_customize(ttrpc_codegen::ProtobufCustomize::default().gen_mod_rs(false).lite_runtime(true).generate_accessors(false))
        .run()
        .expect("codegen");
}
