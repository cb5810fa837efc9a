from finetune_gen.cli import main

main()
