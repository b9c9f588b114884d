// Prints how buildah 1.28 reads Dockerfiles (openshift/imagebuilder's parser, the one
// Debian's buildah is built with), as JSON: one object per file named on the command line.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/openshift/imagebuilder/dockerfile/parser"
)

type instruction struct {
	Cmd   string       `json:"cmd"`
	Flags []string     `json:"flags"`
	Args  []string     `json:"args"`
	JSON  bool         `json:"json"`
	Start int          `json:"start"`
	End   int          `json:"end"`
	Sub   *instruction `json:"sub,omitempty"`
}

func convert(node *parser.Node) instruction {
	out := instruction{Cmd: node.Value, Flags: node.Flags, Args: []string{},
		JSON: node.Attributes["json"], Start: node.StartLine, End: node.EndLine}
	if out.Flags == nil {
		out.Flags = []string{}
	}
	for n := node.Next; n != nil; n = n.Next {
		if len(n.Children) > 0 {
			sub := convert(n.Children[0])
			out.Sub = &sub
			continue
		}
		out.Args = append(out.Args, n.Value)
	}
	return out
}

func main() {
	results := map[string]interface{}{}
	for _, path := range os.Args[1:] {
		f, err := os.Open(path)
		if err != nil {
			panic(err)
		}
		result, err := parser.Parse(f)
		f.Close()
		if err != nil {
			results[path] = map[string]string{"error": err.Error()}
			continue
		}
		found := []instruction{}
		for _, child := range result.AST.Children {
			found = append(found, convert(child))
		}
		results[path] = map[string]interface{}{"escape": string(result.EscapeToken),
			"instructions": found}
	}
	out, _ := json.Marshal(results)
	fmt.Println(string(out))
}
