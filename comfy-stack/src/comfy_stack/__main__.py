from comfy_stack.cli import main

main()
